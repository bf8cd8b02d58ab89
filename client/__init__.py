"""Batch scoring through the REST API (`fastweights-score`, `python -m client`).

Depends on the HTTP API only (httpx, tqdm): never on the service, the model code or torch. The input grammar
is the server's business; the client moves rows, retries, keeps order and makes the output resumable.
"""

__version__ = "0.1.0"
