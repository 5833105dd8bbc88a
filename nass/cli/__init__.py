"""The ``nass`` command line: ``separate``, ``export``, ``plot`` and ``demo``.

Each command is a module here that reports what the library decides: a
user's mistake is one line on stderr and exit status 1, without a traceback
(``NASS_DEBUG=1`` shows it); Ctrl-C is one line and exit status 130. Options
the commands do not know (``--num_spks 3``) are HyperPyYAML overrides of the
hparams file, as on a recipe's command line (:func:`split_overrides`).

Example
-------
>>> main(["separate", "--hparams", "no/such.yaml", "--checkpoint", "no/ckpt", "x.wav"])
1
"""

import os
import sys
import traceback

import yaml
from tqdm import tqdm

from nass.logs import quiet_torchvision_note

# argparse itself exits with 2 on usage errors; 130 is a shell's status for Ctrl-C.
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def main(argv=None):
    """Runs ``nass`` with ``argv`` (``sys.argv[1:]`` by default); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_torchvision_note()
    from nass.cli.parser import build_parser

    parser, known_options = build_parser()
    overrides = {}
    if argv[:1] in (["separate"], ["export"]):
        try:
            rest, overrides = split_overrides(argv[1:], known_options[argv[0]])
        except ValueError as err:
            parser.error(str(err))
        argv = argv[:1] + rest
    args = parser.parse_args(argv)
    try:
        return _run_command(args, overrides)
    except KeyboardInterrupt:
        # Outputs are written atomically: nothing half-written is left (see each command).
        report("interrupted", command=args.command)
        return EXIT_INTERRUPTED


def _run_command(args, overrides):
    if args.command == "separate":
        from nass.cli.separate import separate_command

        return separate_command(args, overrides)
    if args.command == "export":
        from nass.cli.export import export_command

        return export_command(args, overrides)
    if args.command == "plot":
        from nass.cli.plot import plot_command

        return plot_command(args)
    from nass.cli.demo import demo_command

    return demo_command(args)


def split_overrides(tokens, known_options):
    """Splits hparams overrides (options not in ``known_options``) from the rest.

    ``--key value`` and ``--key=value`` become ``{"key": value}`` with the
    value read as YAML (``3`` is an int, ``False`` a bool); everything after
    ``--`` is left alone.

    >>> split_overrides(["a.wav", "--num_spks", "3", "--out-dir", "o", "--noisy=False"],
    ...                 {"--out-dir"})
    (['a.wav', '--out-dir', 'o'], {'num_spks': 3, 'noisy': False})
    """
    rest, overrides = [], {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token == "--":
            rest.extend(tokens[index:])
            break
        name, has_value, value = token.partition("=")
        if not token.startswith("--") or name in known_options:
            rest.append(token)
            index += 1
            continue
        if not has_value:
            if index + 1 >= len(tokens):
                raise ValueError(f"hparams override {name} needs a value")
            value = tokens[index + 1]
            index += 1
        try:
            overrides[name[2:]] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"hparams override {name}: cannot read {value!r} as YAML ({err})") from None
        index += 1
    return rest, overrides


def report(message, command="separate", level="error"):
    tqdm.write(f"nass {command}: {level}: {message}", file=sys.stderr)
    if level == "error" and os.environ.get("NASS_DEBUG") and sys.exc_info()[0] is not None:
        traceback.print_exc()


