"""The supervisor's periodic duties, one module each (see base.py and registry.py)."""
