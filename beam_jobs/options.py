"""Command-line handling shared by the jobs: job arguments by argparse, everything else
is a Beam pipeline option (--runner, --project, --direct_num_workers, ...)."""

import argparse

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

# Locally: the DirectRunner in multi-processing mode on all cores, workers logging
# warnings only. Any option given on the command line wins.
LOCAL_DEFAULTS = ["--runner", "DirectRunner", "--direct_running_mode", "multi_processing",
                  "--direct_num_workers", "0", "--default_sdk_harness_log_level", "WARNING"]


def parse(parser: argparse.ArgumentParser, argv=None) -> tuple[argparse.Namespace, PipelineOptions]:
    parser.epilog = ((parser.epilog or "") + " Any other argument is an Apache Beam pipeline option, "
                     "e.g. --runner DataflowRunner --project P --region R --temp_location gs://...; "
                     "default: " + " ".join(LOCAL_DEFAULTS)).strip()
    args, beam_args = parser.parse_known_args(argv)
    return args, pipeline_options(beam_args)


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    options = PipelineOptions(LOCAL_DEFAULTS + list(beam_args))
    direct = options.view_as(DirectOptions)
    if options.view_as(StandardOptions).runner in (None, "DirectRunner") and direct.direct_num_workers == 0:
        # Beam reads 0 as "all cores" only in some code paths; make it explicit.
        import os
        direct.direct_num_workers = os.cpu_count() or 1
    return options
