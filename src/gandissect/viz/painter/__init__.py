"""The painter: a local web app that edits a generator's images with the units a dissection found.

`engine.Painter` turns strokes into unit edits (`units.py` chooses the units, `strokes.py` rasterises the
regions); `app.create_app` serves it over HTTP with an OpenAPI schema (`schema.py`, `guard.py`) and the
single-page front end in `static/`; `server.py` runs it with uvicorn. `gandissect paint RUN` puts them
together (`loader.open_painter`).
"""
