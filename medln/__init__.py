"""MedLN: LayerNorm fine-tuning of medical vision-language models (Chen et al., ACM MM 2024).

The core library; it never imports gradio (medln.ui is the only package that does).
Heavy imports (torch, transformers) happen inside the functions that need them.
"""

__version__ = "0.1.0"

DISCLAIMER = "Research and teaching demo. Not a medical device; not for clinical use."
