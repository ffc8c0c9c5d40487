"""What ingest reports when a file cannot be taken."""


class IngestError(RuntimeError):
    """A file could not be ingested; the message names the file and why. Nothing of it was produced."""
