"""Export a finished run (its record, metrics and training curves) to MLflow or Weights & Biases.

  harness export runs/<model>/<run id> --to mlflow --out mlruns    a local MLflow file store
  harness export runs/<model>/<run id> --to mlflow --out sqlite:///mlflow.db
  harness export runs/<model>/<run id> --to wandb                  offline, into the run folder

Each target is an optional extra: pip install 'harness[mlflow]' or 'harness[wandb]'.
"""
from harness.report.export import TARGETS, export_run


def add_arguments(parser):
    parser.add_argument("run", metavar="RUN_DIR", help="a finished run folder (runs/<model>/<run id>)")
    parser.add_argument("--to", required=True, choices=TARGETS, help="mlflow or wandb (each an optional extra)")
    parser.add_argument("--out", metavar="DIR|URI",
                        help="mlflow: a tracking URI, or a folder for a local file store (default: MLflow's own); "
                             "wandb: the folder of the offline run (default: the run folder)")
    parser.add_argument("--experiment", default="harness", help="MLflow experiment / W&B project (default: harness)")


def run(args):
    print(export_run(args.run, args.to, where=args.out, experiment=args.experiment))
