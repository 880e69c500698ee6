"""Pydantic models shared by the API, the workflows and the activities (one input and one result model each)."""
