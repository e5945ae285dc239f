"""DLRM's embedding tables as a torchrec `EmbeddingBagCollection`, sharded over processes (docs/extending.md, section 6).

Needs torchrec, which the project's environment does not install (see
`requirements.txt` here for the versions that run on CPU and why they are pinned).
"""
