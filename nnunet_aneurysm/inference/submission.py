"""Many DICOM series folders -> ``submission.csv``, as ``predict-series`` runs them.

Rows are appended as each series finishes (the header once), so a killed run keeps every finished
series and ``resume`` predicts only the others. Beside the submission: ``<stem>_log.csv`` (each
series' folder, the step its row came from, seconds per step, fallback reasons) and, with a
stacker, ``<stem>_features.csv`` (the stacker's inputs per series and fold model).

A damaged series still gets a row (see ``series.py``); what this module adds is the line between
that and a systemic failure: input folders none of which holds DICOM (``nnUNet_raw`` given by
mistake), or more than :data:`MAX_FALLBACK_SHARE` of the series ending on the fallback row.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from nnunet_aneurysm.inference.series import STEP_SECONDS, SeriesPipeline, SeriesResult
from nnunet_aneurysm.labels import ID_COLUMN, SUBMISSION_COLUMNS

# More than this share of series on the pipeline file's fallback row (the training prevalence) is a
# systemic failure (a device or model failing on every series, not a few damaged series): predict-series
# then exits non-zero unless --allow-fallback.
MAX_FALLBACK_SHARE = 0.10
SOURCES = ("stacker", "stage2", "fallback")  # where a row's probabilities came from
LOG_COLUMNS = (ID_COLUMN, "folder", "source", *(f"seconds_{step}" for step in STEP_SECONDS), "reasons")
DICOM_PROBE_FILES = 20  # files of a folder looked at to decide whether it holds DICOM


def log_path(output: Path) -> Path:
    return output.with_name(output.stem + "_log.csv")


def features_path(output: Path) -> Path:
    return output.with_name(output.stem + "_features.csv")


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm`` name, or DICOM's 'DICM' marker after the 128-byte preamble."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def holds_dicom(folder: Path) -> bool:
    """Whether any of the folder's first files (by name) is DICOM."""
    files = sorted(p for p in folder.iterdir() if p.is_file())[:DICOM_PROBE_FILES]
    return any(is_dicom_file(p) for p in files)


def series_folders(inputs: list[Path], require_dicom: bool = True) -> list[Path]:
    """Series folders from INPUT paths: a series folder (holds files), a folder of series folders, or an
    RSNA root (holds ``series/``). A folder without DICOM among others is kept (it gets the fallback row);
    ``require_dicom``: a ValueError when none of them holds DICOM."""
    found = []
    for path in inputs:
        path = Path(path)
        if not path.is_dir():
            raise ValueError(f"{path} is not a folder")
        if (path / "series").is_dir():
            path = path / "series"
        if any(p.is_file() for p in path.iterdir()):
            found.append(path)
        else:
            found += sorted(p for p in path.iterdir() if p.is_dir())
    where = ", ".join(map(str, inputs))
    if not found:
        raise ValueError(f"no series folder in {where}")
    if require_dicom and not any(holds_dicom(folder) for folder in found):
        raise ValueError(f"none of the {len(found)} folder(s) found in {where} holds DICOM files: INPUT is a series "
                         f"folder, a folder of series folders or an RSNA root (not nnUNet_raw, which holds NIfTI)")
    return found


def append_rows(path: Path, rows: pd.DataFrame) -> None:
    """Append to a CSV (written and closed at once), in the columns of its header; the header when new."""
    if path.is_file() and path.stat().st_size > 0:
        rows.reindex(columns=pd.read_csv(path, nrows=0).columns).to_csv(path, mode="a", header=False, index=False)
    else:
        rows.to_csv(path, index=False)


def _rewrite(path: Path, rows: pd.DataFrame) -> None:
    tmp = path.with_name(path.name + ".partial")
    rows.to_csv(tmp, index=False)
    tmp.replace(path)


def finished_series(output: Path) -> dict[str, str]:
    """Folder -> source of the series a previous run finished: a complete row in the submission and in its
    log. Both files (and the features file) are rewritten with only those, dropping a row torn by a kill."""
    if not output.is_file() or not log_path(output).is_file():
        return {}
    submission = pd.read_csv(output, dtype={ID_COLUMN: str}).dropna(subset=[ID_COLUMN, *SUBMISSION_COLUMNS])
    log = pd.read_csv(log_path(output), dtype={ID_COLUMN: str, "folder": str, "reasons": str})
    log = log[log["source"].isin(SOURCES) & log[ID_COLUMN].isin(submission[ID_COLUMN])]
    submission = submission[submission[ID_COLUMN].isin(log[ID_COLUMN])]
    _rewrite(output, submission)
    _rewrite(log_path(output), log)
    if features_path(output).is_file():
        features = pd.read_csv(features_path(output), dtype={ID_COLUMN: str})
        _rewrite(features_path(output), features[features[ID_COLUMN].isin(log[ID_COLUMN])])
    return dict(zip(log["folder"], log["source"]))


@dataclass
class PredictionSummary:
    """What one predict-series run did; ``sources`` count every series in the output, earlier runs' included."""

    output: Path
    sources: Counter = field(default_factory=Counter)
    resumed: int = 0  # series a previous run had finished
    fallback_reasons: Counter = field(default_factory=Counter)  # first reason of each fallback row of this run
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.sources.values())

    @property
    def fallback_share(self) -> float:
        return self.sources["fallback"] / max(self.total, 1)

    def line(self) -> str:
        """The one line the terminal shows at the end."""
        counts = ", ".join(f"{source} {self.sources[source]}" for source in SOURCES if self.sources[source])
        resumed = f" ({self.resumed} kept from an earlier run)" if self.resumed else ""
        return (f"{self.total - self.resumed} series predicted in {self.seconds / 60:.1f} min{resumed}: "
                f"{self.output} holds {self.total} (rows from {counts}); per-series log {log_path(self.output)}")

    def systemic_failure(self) -> str | None:
        """One line when more than MAX_FALLBACK_SHARE of the series got the fallback row, else None."""
        if self.fallback_share <= MAX_FALLBACK_SHARE:
            return None
        reason = f"; most often: {self.fallback_reasons.most_common(1)[0][0]}" if self.fallback_reasons else ""
        return (f"{self.sources['fallback']} of {self.total} series ({self.fallback_share:.0%}, more than "
                f"{MAX_FALLBACK_SHARE:.0%}) got the fallback row{reason} (all reasons: {log_path(self.output)}; "
                f"--allow-fallback accepts this)")


def _failure(result: SeriesResult) -> str:
    """The reason a fallback row fell back (its failed step), shortened to fit a terminal line."""
    failed = [r for r in result.reasons if " failed: " in r] or result.reasons or ["no reason recorded"]
    return failed[-1] if len(failed[-1]) <= 160 else failed[-1][:157] + "..."


def _log_row(result: SeriesResult, folder: Path) -> dict:
    return {ID_COLUMN: result.series_uid, "folder": str(folder), "source": result.source,
            **{f"seconds_{k}": round(result.seconds[k], 3) for k in STEP_SECONDS if k in result.seconds},
            "reasons": "; ".join(result.reasons)}


def predict_series(pipeline: SeriesPipeline, folders: list[Path], output: Path, progress: bool = True,
                   save_outputs: Path | None = None, resume: bool = False) -> PredictionSummary:
    """Predict every folder, appending its row to ``output`` (``SeriesInstanceUID`` + 14 columns), its log
    row and (with a stacker) its feature rows as it finishes. ``resume``: keep the series a previous run
    finished and predict the others; otherwise start the files afresh."""
    from tqdm import tqdm

    from nnunet_aneurysm.inference.outputs import save_series_outputs

    start = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    folders = [Path(f).resolve() for f in folders]
    done = finished_series(output) if resume else {}
    if not resume:
        for path in (output, log_path(output), features_path(output)):
            path.unlink(missing_ok=True)
    summary = PredictionSummary(output, Counter(done[str(f)] for f in folders if str(f) in done))
    summary.resumed = summary.total
    todo = [f for f in folders if str(f) not in done]
    with tqdm(total=len(folders), initial=len(folders) - len(todo), desc="predicting series", unit="series",
              disable=not progress) as bar:
        for folder in todo:
            result = pipeline.run(folder)
            append_rows(output, pd.DataFrame([result.row()], columns=[ID_COLUMN, *SUBMISSION_COLUMNS]))
            append_rows(log_path(output), pd.DataFrame([_log_row(result, folder)], columns=list(LOG_COLUMNS)))
            if result.fold_features is not None:  # the stacker's inputs: what the report's ablations re-score
                append_rows(features_path(output), result.fold_features.assign(
                    **{ID_COLUMN: result.series_uid}, source_fold=pipeline.pipeline.stage2.folds))
            if save_outputs is not None:
                save_series_outputs(result, save_outputs)
            summary.sources[result.source] += 1
            if result.source == "fallback":
                summary.fallback_reasons[_failure(result)] += 1
            bar.update()
            bar.set_postfix(fallback=summary.sources["fallback"])
    for path, columns in ((output, [ID_COLUMN, *SUBMISSION_COLUMNS]), (log_path(output), list(LOG_COLUMNS))):
        if not path.is_file():  # a part with no series (more parts than series): its header, so the merge sees it
            pd.DataFrame(columns=columns).to_csv(path, index=False)
    summary.seconds = time.perf_counter() - start
    return summary
