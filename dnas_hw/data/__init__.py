"""Data: prepared-data folders, Criteo ingestion, synthetic data (see docs/data.md).

Kept free of imports, so that the CLI starts fast. One idea per module:

    folder    the prepared-data folder contract: PreparedData, Split, iterate_batches
    writer    writing such a folder chunk by chunk
    npy       an .npy file written by appending rows
    criteo    the raw Criteo format: reading chunks of lines, vectorised parsing
    swar      decoding 8 ASCII digits at a time in a 64-bit word
    splits    which rows go to train / val / test (DLRM days, or random)
    vocab     categorical hash -> id (modulo hashing, or a min-count vocabulary)
    prepare   `data prepare`: raw files -> folder
    synth     `data synth`: Criteo-shaped rows and the planted teacher
    rawtsv    writing rows in the raw Criteo format
    show      `data show`
    cli       the `dnas-hw data` command group
"""
