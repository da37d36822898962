"""mlplatform: an ML platform on Kubernetes, shipped as a Pulumi program."""

__version__ = "0.1.0"
