"""The public and admin HTTP servers, the request pipeline and the process model."""
