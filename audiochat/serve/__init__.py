"""Serving a trained model: the chat engine, its faces (terminal, report, Jupyter panel) and the
web app."""
