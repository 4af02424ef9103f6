"""The speed bench (``make bench``, ``python -m bench``): one run that measures
Storywire against its targets.

One job per module: ``cli`` (the command line and the order of the run),
``speed`` (sections 1 to 5), ``stream`` (the articles), ``engine`` (the
engine's class, named in this one place), ``ingest`` (the in-process engine
run), ``reads`` (reads under load), ``naive_comparison`` (the engine beside
``naive_reference``, the obvious build), ``end_to_end`` (the API and workers
as processes), ``retention`` (the run over several windows), ``report`` (the
table and the JSON); beside them ``processes``, ``http_client``,
``redis_server``, ``settings``, ``machine``, ``stats`` and ``console``.
"""
