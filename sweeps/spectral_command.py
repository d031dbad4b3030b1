"""``groupsweep spectral``: spectral imbalance of penultimate features (Section 5 of the paper).

Picks trials of a sweep directory (``--criterion``: per dataset and model, every seed of the balancing
method that criterion selects at the final epoch, in a search of its chosen configuration; ``oracle`` selects
by test WGA, an upper bound rather than a model selection; ``--group-info`` chooses only among the methods using
at most that much group information, as ``analyze --group-info``; ``--trial``: named trials), extracts
their penultimate training features from a kept checkpoint (the final epoch by default; the spec's
``keep_checkpoints`` decides which epochs are kept), and writes into ``--out``:

- ``spectral_eigenvalues.csv``: the top eigenvalues of every group and class covariance (equation (2));
- ``spectral_rho_table.csv``: rho(y) per trial and class, with the test group accuracies;
- ``spectral_table5.csv`` and ``spectral_table5.md``: Table 5 (argmax rho against argmax accuracy gap);
- ``spectral_group_eigenvalues_top<K>`` (Figures 5 / 10), ``spectral_class_eigenvalues_top<K>``
  (Figures 11 / 12) for each ``--top K``, and ``spectral_rho`` (Figure 6): PNG, PDF and CSV each.
"""

from __future__ import annotations

import argparse
import re
import sys

from sweeps.analyze_command import CRITERION_CHOICES as ANALYZE_CRITERIA
from sweeps.analyze_command import (add_group_info_argument, add_out_argument, check_group_info, check_output,
                                    final_location, load_run, output_folder, print_notes, publish)
from trainables.errors import GroupsweepError

# Spectral analysis follows one selected method, so the table-only "all" is not a choice here.
CRITERION_CHOICES = tuple(c for c in ANALYZE_CRITERIA if c != "all")
DEVICE_PATTERN = r"cpu|cuda(:[0-9]+)?|mps"  # the torch devices features are extracted on


def register(subparsers) -> None:
    """Add the ``spectral`` command."""
    parser = subparsers.add_parser(
        "spectral", help="eigenvalues of group / class feature covariances, rho(y) and Table 5 (Section 5)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the sweep's directory (<storage>/<name>)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--criterion", choices=CRITERION_CHOICES, default=None,
                       help="analyse every seed of the method (in a search, the configuration) this criterion "
                            "selects, per dataset and model (default: wga; oracle selects by test WGA)")
    which.add_argument("--trial", action="append", default=None, metavar="ID",
                       help="analyse this trial (trial id or name); repeatable")
    add_group_info_argument(parser, "with a criterion, choose")
    parser.add_argument("--top", type=int, action="append", default=None, metavar="K",
                        help="eigenvalues per covariance in the figures: 10 (Figures 5, 11) or 50 (Figures 10, 12); "
                             "repeatable, one extraction serves all (default: 10)")
    parser.add_argument("--epoch", type=int, default=None,
                        help="checkpoint epoch to analyse (default: each trial's last epoch; must still be kept)")
    parser.add_argument("--examples", choices=("train", "train_subset"), default="train",
                        help="features of the full training split (default) or of the subset the run trained on")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="examples per forward pass (default: the trial's eval_batch_size)")
    add_out_argument(parser)
    parser.set_defaults(func=run_spectral, check=check_spectral_args)


def check_spectral_args(args: argparse.Namespace) -> None:
    """Every ``spectral`` argument that can be checked without the sweep (also a spec's ``after`` command's,
    before the sweep runs); one-line ``GroupsweepError``."""
    for flag, value in [*(("--top", top) for top in args.top or []), ("--batch-size", args.batch_size)]:
        if value is not None and value < 1:
            raise GroupsweepError(f"{flag} must be a positive integer, got {value}")
    if args.epoch is not None and args.epoch < 1:
        raise GroupsweepError(f"--epoch must be a positive integer, got {args.epoch}")
    check_group_info(args.group_info)
    if args.group_info is not None and args.trial:
        raise GroupsweepError("--group-info restricts the methods a criterion chooses among; it does not apply to "
                              "trials named by --trial")
    if args.device is not None and not re.fullmatch(DEVICE_PATTERN, args.device):
        raise GroupsweepError(f"--device {args.device!r} is not a torch device this tool runs on; give cpu, cuda, "
                              "cuda:N or mps")
    if args.out is not None:
        check_output(args.out)


def run_spectral(args: argparse.Namespace) -> int:
    """Choose the trials, extract their features, write the tables and figures; print Table 5."""
    # deferred: feature extraction imports torch and the models, which the CLI's other commands do not need
    from analysis.features import analyze_trials, criterion_trials, resolve_trials
    from analysis.spectral import write_outputs

    check_spectral_args(args)
    tops = args.top or [10]
    results = load_run(args.run_dir)
    notes = list(results.problems)
    if args.trial:
        trial_ids = resolve_trials(results, args.trial)
    else:
        trial_ids, selection_notes = criterion_trials(results, args.criterion or "wga", args.group_info)
        notes += selection_notes
    if not trial_ids:
        print_notes(notes)
        print("error: no trial to analyse: no complete trial of a selected method (the notes above say why)",
              file=sys.stderr)
        return 1
    spectra = analyze_trials(results, trial_ids, max(tops), epoch=args.epoch, examples=args.examples,
                             device=args.device, batch_size=args.batch_size,
                             log=lambda message: print(message, file=sys.stderr, flush=True))
    out = output_folder(args)
    outputs = write_outputs(spectra, tops, out)
    print_notes(notes + outputs.notes)
    print((out / "spectral_table5.md").read_text())
    for path in outputs.files:
        print(f"wrote {final_location(args, out, path.name)}")
    publish(args, out)
    return 0
