"""HTTP endpoints (FastAPI)."""
