"""The seed's API: AdaptiveQuantizer, its configuration files and its reports, over the analysis
and core layers."""
