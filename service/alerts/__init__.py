"""Health monitoring: re-analyse running experiments and raise each alert once per condition."""
