"""``rfdetect serve``: the web service (FastAPI + uvicorn).

* :mod:`.app`: the FastAPI application (``/detect``, IQEngine's plugin API, training
  jobs, the live view, recordings and models, the pages in ``static/``);
* :mod:`.detection`: uploads -> the existing detect path (``load_model`` for a tile,
  ``run_detect`` for a SigMF recording);
* :mod:`.jobs`: training jobs in SQLite, run by ``rfdetect-train`` worker processes;
* :mod:`.live`: the server-side ZeroMQ subscription of the live view.

docs/web.md has the endpoints, limits and how to point IQEngine at it.
"""
