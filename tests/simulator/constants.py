"""Keys and names shared by the simulator tests."""

API_VERSION = "2024-10-21"
DEPLOYMENT = "gpt-4o-mini"
EAST_SECRET = "sim-east-secret"
WEST_SECRET = "sim-west-secret"
