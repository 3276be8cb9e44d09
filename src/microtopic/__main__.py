"""`python -m microtopic` runs the `microtopic` command."""

from microtopic.cli.main import main

main()
