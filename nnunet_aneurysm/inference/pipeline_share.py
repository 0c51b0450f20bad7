"""A trained pipeline as one zip file: ``nnunet-aneurysm pipeline export`` and ``pipeline install``.

The zip holds exactly what the pipeline file names, and nothing a prediction does not read (no other
folds, no ``checkpoint_best.pth``, no training logs, no raw data), laid out like nnU-Net's results
folder so that stock nnU-Net and ``pipeline init`` read the installed models too::

    manifest.json        format, the plugin's and nnunetv2's versions, the file list
    pipeline.json        the pipeline file, its paths pointing inside the zip
    nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>/
                         plans.json, dataset.json, dataset_fingerprint.json, fold_<k>/<checkpoint>
    postprocessing/gat/fold_<k>/        the GATs of the stage-2 folds the pipeline uses
    postprocessing/stacker/             the stacker

Installing refuses a zip exported with another plugin or nnunetv2 version (checkpoints and plans are
read by that code), and checks that every fold the pipeline file names arrived.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path, PurePosixPath

from nnunet_aneurysm import __version__
from nnunet_aneurysm.inference.pipeline_file import ModelEntry, Pipeline, read_pipeline
from nnunet_aneurysm.nnunet_version import installed_nnunetv2_version

FORMAT = "nnunet-aneurysm shared pipeline"
VERSION = 1
MANIFEST = "manifest.json"
PIPELINE_FILE = "pipeline.json"
RESULTS = "nnUNet_results"
GAT = "postprocessing/gat"
STACKER = "postprocessing/stacker"
MODEL_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json")  # beside the folds, as nnU-Net keeps them
STORED = (".pth", ".pt")  # checkpoints barely compress: stored, not deflated


def installed_versions() -> dict[str, str | None]:
    """The versions a shared pipeline must match: this plugin's and nnunetv2's."""
    return {"plugin_version": __version__, "nnunetv2_version": installed_nnunetv2_version()}


def _model_members(entry: ModelEntry, folder: Path) -> tuple[str, dict[str, Path]]:
    """Where an nnU-Net model folder goes in the zip, and its files that a prediction reads."""
    for name in MODEL_FILES[:2]:  # what nnU-Net's predictor reads; the fingerprint travels where there is one
        if not (folder / name).is_file():
            raise ValueError(f"{folder} has no {name}: not an nnU-Net model folder")
    inside = f"{RESULTS}/{folder.parent.name}/{folder.name}"
    members = {f"{inside}/{name}": folder / name for name in MODEL_FILES if (folder / name).is_file()}
    for fold in entry.folds:
        members[f"{inside}/fold_{fold}/{entry.checkpoint}"] = folder / f"fold_{fold}" / entry.checkpoint
    return inside, members


def _folder_members(folder: Path, inside: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise ValueError(f"the pipeline file names {folder}, which is not a folder")
    return {f"{inside}/{path.relative_to(folder).as_posix()}": path for path in sorted(folder.rglob("*"))
            if path.is_file()}


def shared_members(pipeline: Pipeline) -> tuple[Pipeline, dict[str, Path]]:
    """The pipeline file as it reads inside the zip, and every file to pack (name in the zip -> source)."""
    members: dict[str, Path] = {}
    entries = {}
    for stage in ("stage1", "stage2"):
        entry = getattr(pipeline, stage)
        inside, files = _model_members(entry, pipeline.resolve(entry.folder))
        members.update(files)
        entries[stage] = replace(entry, folder=inside)
    gat = stacker = None
    if pipeline.gat:
        gat = GAT
        for fold in pipeline.stage2.folds:  # the GATs prediction loads: one per stage-2 fold
            members.update(_folder_members(pipeline.resolve(pipeline.gat) / f"fold_{fold}", f"{GAT}/fold_{fold}"))
    if pipeline.stacker:
        stacker = STACKER
        members.update(_folder_members(pipeline.resolve(pipeline.stacker), STACKER))
    return replace(pipeline, **entries, gat=gat, stacker=stacker, path=None), members


def export_pipeline(pipeline_file: Path, archive: Path) -> Path:
    """Pack the pipeline ``pipeline_file`` names into ``archive`` (a zip, written whole or not at all)."""
    shared, members = shared_members(read_pipeline(pipeline_file))
    manifest = {"format": FORMAT, "version": VERSION, **installed_versions(),
                "files": sorted([PIPELINE_FILE, *members])}
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(partial, "w") as zf:
        zf.writestr(MANIFEST, json.dumps(manifest, indent=2), zipfile.ZIP_DEFLATED)
        zf.write(shared.save(Path(tmp) / PIPELINE_FILE), PIPELINE_FILE, zipfile.ZIP_DEFLATED)
        for name, source in sorted(members.items()):
            zf.write(source, name, zipfile.ZIP_STORED if source.suffix in STORED else zipfile.ZIP_DEFLATED)
    os.replace(partial, archive)
    return archive


def _read_manifest(zf: zipfile.ZipFile, archive: Path) -> dict:
    try:
        manifest = json.loads(zf.read(MANIFEST))
    except KeyError:
        raise ValueError(f"{archive} is not a shared nnunet-aneurysm pipeline (no {MANIFEST}; make one with "
                         f"nnunet-aneurysm pipeline export)") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{archive} is not a shared nnunet-aneurysm pipeline")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{archive} has shared-pipeline format version {manifest.get('version')}; this plugin reads "
                         f"{VERSION}")
    return manifest


def check_versions(manifest: dict, archive: Path) -> None:
    """A one-line ValueError where the zip was exported with another plugin or nnunetv2 version."""
    here = installed_versions()
    names = {"plugin_version": "nnunet-aneurysm", "nnunetv2_version": "nnunetv2"}
    differ = [key for key in names if manifest.get(key) != here[key]]
    if differ:
        wanted = ", ".join(f"{names[k]} {manifest.get(k)}" for k in differ)
        found = ", ".join(f"{names[k]} {here[k]}" for k in differ)
        pins = " ".join(f"{names[k]}=={manifest.get(k)}" for k in differ)
        raise ValueError(f"{archive} was exported with {wanted}; this environment has {found}: pip install {pins}")


def _safe(name: str) -> bool:
    """A member name that stays inside the install folder."""
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and "\\" not in name and ":" not in name


def install_pipeline(archive: Path, target: Path) -> Path:
    """Unpack a shared pipeline into ``target`` (a new or empty folder) after checking its versions; returns the
    installed pipeline file's path."""
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise ValueError(f"no file {archive}")
    if not zipfile.is_zipfile(archive):
        raise ValueError(f"{archive} is not a zip file")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"{target} exists and is not an empty folder: install into a new folder")
    with zipfile.ZipFile(archive) as zf:
        manifest = _read_manifest(zf, archive)
        check_versions(manifest, archive)
        names = zf.namelist()
        unsafe = [n for n in names if not _safe(n)]
        if unsafe:
            raise ValueError(f"{archive} holds a path outside its folder: {unsafe[0]}")
        missing = sorted(set(manifest["files"]) - set(names))
        if missing:
            raise ValueError(f"{archive} lacks {len(missing)} files its manifest lists, e.g. {missing[0]}")
        target.mkdir(parents=True, exist_ok=True)
        try:
            zf.extractall(target)
        except zipfile.BadZipFile as err:
            raise ValueError(f"{archive} is damaged: {err}") from None
    return read_pipeline(target / PIPELINE_FILE).path
