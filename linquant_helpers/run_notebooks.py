"""Execute every notebook of the series headlessly, for instructors and CI.

    python -m linquant_helpers.run_notebooks              # all, as a learner would
    python -m linquant_helpers.run_notebooks --solutions  # with the reference solutions
    python -m linquant_helpers.run_notebooks 01 04        # names containing 01 or 04
    python -m linquant_helpers.run_notebooks --inplace    # maintainers: store fresh outputs

Executed copies go to ``--output-dir`` (default ``notebooks/_executed``), so the
stored notebooks are left untouched unless ``--inplace`` is given. Prints a
table of per-notebook wall times at the end; exits 1 if any notebook failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


@dataclass
class Outcome:
    name: str
    seconds: float
    error: str | None = None


def find_notebooks(directory: Path, patterns: list[str]) -> list[Path]:
    """The numbered notebooks of ``directory`` in reading order, filtered by ``patterns``."""
    found = sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))
    if patterns:
        found = [p for p in found if any(s in p.name for s in patterns)]
    return found


def execute(path: Path, output: Path, *, solutions: bool, inplace: bool, timeout: int) -> Outcome:
    """Run one notebook in a fresh kernel with its folder as working directory."""
    start = time.perf_counter()
    try:
        if inplace:
            import nbformat
            from nbclient import NotebookClient

            nb = nbformat.read(path, as_version=4)
            NotebookClient(
                nb,
                timeout=timeout,
                kernel_name="python3",
                resources={"metadata": {"path": str(path.parent)}},
            ).execute()
            nbformat.write(nb, path)
        else:
            import papermill

            papermill.execute_notebook(
                str(path),
                str(output),
                parameters={"USE_SOLUTIONS": solutions},
                cwd=str(path.parent),
                kernel_name="python3",
                progress_bar=False,
                execution_timeout=timeout,
            )
    except Exception as err:  # report every failure in the table, then exit non-zero
        return Outcome(path.name, time.perf_counter() - start, f"{type(err).__name__}: {err}")
    return Outcome(path.name, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="run only notebooks whose names contain these")
    parser.add_argument("--solutions", action="store_true", help="fill in the reference solutions")
    parser.add_argument(
        "--inplace", action="store_true", help="store fresh outputs in the notebooks"
    )
    parser.add_argument("--notebook-dir", type=Path, default=NOTEBOOK_DIR)
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    if args.inplace and args.solutions:
        parser.error("--inplace stores what a learner sees; it cannot be combined with --solutions")

    notebooks = find_notebooks(args.notebook_dir, args.patterns)
    if not notebooks:
        print(f"no notebooks matched in {args.notebook_dir}", file=sys.stderr)
        return 1
    out_dir = args.output_dir or args.notebook_dir / "_executed"
    out_dir.mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    outcomes = []
    for path in (bar := tqdm(notebooks, unit="notebook")):
        bar.set_description(path.stem)
        outcomes.append(
            execute(
                path,
                out_dir / path.name,
                solutions=args.solutions,
                inplace=args.inplace,
                timeout=args.timeout,
            )
        )

    width = max(len(o.name) for o in outcomes)
    print(f"\n{'notebook':<{width}}  {'seconds':>8}  result")
    for o in outcomes:
        print(f"{o.name:<{width}}  {o.seconds:8.1f}  {'ok' if o.error is None else 'FAILED'}")
    print(f"{'total':<{width}}  {sum(o.seconds for o in outcomes):8.1f}")
    for o in outcomes:
        if o.error:
            print(f"\n{o.name} failed:\n{o.error}", file=sys.stderr)
    return 0 if all(o.error is None for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
