"""A small FastAPI service on acacheorm: see README.md in this directory."""
