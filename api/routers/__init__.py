"""One module per resource (FastAPI "bigger applications"); review pages will add theirs here."""
