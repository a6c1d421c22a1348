"""CoDERT for NeMo: in-place encoder distillation of RNN-T models (arXiv 2106.07734)."""
