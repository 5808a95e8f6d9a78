"""Train contrastive embedding encoders and export them as TorchScript + model card.

Importing the package is cheap: torch is only imported by the modules that need it.
"""

__version__ = "0.1.0"
