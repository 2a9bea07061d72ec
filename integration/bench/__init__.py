"""Benchmarks and load generators: the only home of benchmark code, imported only by `marrowlink bench`.

Each benchmark measures marrowlink beside a peer in the same run (Orthanc, dcmtk, wsidicomizer,
OrthancWSIDicomizer, a LIS peer) and reports both numbers and their ratio, since absolute times on
a shared machine are noisy: `wsi` (encoding), `store` (`dicomweb`, `dimse`, with the servers and
load generator of `load`), `ai` (inference), `mllp` (outbox and inbound, against `peers`). They
time the packages' internals on purpose, so they live here, above every package, and never inside one.
"""
