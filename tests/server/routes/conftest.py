"""The search routes are tested on the search tests' indexed Kubernetes subset."""

from tests.search.conftest import k8s_index, minilm_encoder  # noqa: F401 - fixtures
