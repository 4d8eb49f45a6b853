"""The production settings plus the bare baseline view (bench.baseline_urls).

Only bench/run serves these; production URLs never include the baseline.
"""

from fleet.settings import *  # noqa: F401,F403

ROOT_URLCONF = "bench.baseline_urls"

# The benchmark fleets are named after Docker Hub images that do not exist:
# rollouts go on by tag instead of asking its API.
REGISTRY_RESOLVE_DIGESTS = False
