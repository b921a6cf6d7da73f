"""The search routes are tested on the search tests' indexed Kubernetes subset (the
``k8s_index`` and ``minilm_encoder`` fixtures of tests/conftest.py, one session instance)."""
