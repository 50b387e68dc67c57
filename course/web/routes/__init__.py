"""One module per resource the web app serves."""
