"""Beam pipeline options shared by the jobs. A job's own parameters are a typed
dataclass (params.py); every other command-line argument, or the `beam_args` a caller
passes to `run(params, beam_args)`, is a Beam pipeline option (--runner, --project,
--direct_num_workers, ...)."""

import os

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

# Locally: the DirectRunner in multi-processing mode on all cores, workers logging
# warnings only. Any option given on the command line wins.
LOCAL_DEFAULTS = ["--runner", "DirectRunner", "--direct_running_mode", "multi_processing",
                  "--direct_num_workers", "0", "--default_sdk_harness_log_level", "WARNING"]

EPILOG = ("Any other argument is an Apache Beam pipeline option, e.g. --runner DataflowRunner --project P "
          "--region R --temp_location gs://...; default: " + " ".join(LOCAL_DEFAULTS))


def pipeline_options(beam_args=()) -> PipelineOptions:
    options = PipelineOptions(LOCAL_DEFAULTS + list(beam_args))
    direct = options.view_as(DirectOptions)
    if options.view_as(StandardOptions).runner in (None, "DirectRunner") and direct.direct_num_workers == 0:
        # Beam reads 0 as "all cores" only in some code paths; make it explicit.
        direct.direct_num_workers = os.cpu_count() or 1
    return options
