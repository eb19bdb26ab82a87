"""The HTTP service: the FastAPI app and the runtime that wires its backends and models."""
