"""Tests of the offline dataset builders (brain: ch2 + AAL; abdomen: TotalSegmentator reference CT/MR).

The pinned sources are fetched into the shared cache on first use; a failed fetch raises
SourceFetchError and so errors the tests (never a skip). Datasets are built small (3 mm, 2-3 cases).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_mambahome.cli import main
from nnunetv2_mambahome.datasets import abdomen, augment, brain, sources
from nnunetv2_mambahome.datasets.nnunet_raw import DatasetExistsError

SPACING = 3.0
SEED = 7


@pytest.fixture(scope="session")
def brain_template() -> brain.BrainTemplate:
    return brain.load_brain_template(SPACING)


@pytest.fixture(scope="session")
def brain_dir(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw_brain")
    return brain.build_brain_dataset(raw, dataset_id=901, name="TestBrain", num_train=2, num_test=1,
                                     spacing=SPACING, seed=SEED)


@pytest.fixture(scope="session")
def abdomen_sources() -> dict[str, abdomen.AbdomenSource]:
    return abdomen.load_abdomen_sources(SPACING)


@pytest.fixture(scope="session")
def abdomen_dir(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw_abdomen")
    return abdomen.build_abdomen_dataset(raw, dataset_id=902, name="TestAbdomen", num_train=2, num_test=2,
                                         spacing=SPACING, seed=SEED)


def _load(path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def _cases(folder, split: str) -> list[str]:
    return sorted(p.name[: -len("_0000.nii.gz")] for p in (folder / f"images{split}").glob("*_0000.nii.gz"))


# ---------------------------------------------------------------- AAL grouping

def test_aal_grouping_assigns_all_116_names():
    folder = sources.mricron_templates()
    names = brain.read_aal_names(folder / "aal.nii.txt")
    assert sorted(names) == list(range(1, 117))
    assert sorted(np.unique(_load(folder / "aal.nii.gz"))[1:].tolist()) == list(range(1, 117))
    mapping = brain.group_aal(names)
    assert sorted(mapping) == sorted(names)
    assert sorted(set(mapping.values())) == list(range(1, len(brain.AAL_GROUPS) + 1))
    by_name = {names[i]: c for i, c in mapping.items()}
    # names whose prefixes nearly collide with another group's
    assert by_name["ParaHippocampal_L"] == brain.BRAIN_LABELS["hippocampus_amygdala"]
    assert by_name["Parietal_Sup_R"] == brain.BRAIN_LABELS["parietal"]
    assert by_name["Temporal_Pole_Mid_L"] == brain.BRAIN_LABELS["temporal"]
    assert by_name["Vermis_4_5"] == brain.BRAIN_LABELS["cerebellum"]


def test_group_aal_rejects_unassigned_name():
    with pytest.raises(ValueError, match="Mystery_L"):
        brain.group_aal({1: "Precentral_L", 2: "Mystery_L"})


# ---------------------------------------------------------------- brain dataset

def test_brain_dataset_json(brain_dir):
    info = json.loads((brain_dir / "dataset.json").read_text())
    assert info["labels"] == brain.BRAIN_LABELS
    assert sorted(info["labels"].values()) == list(range(len(info["labels"])))
    assert info["labels"]["background"] == 0
    assert info["channel_names"] == {"0": "T1"}
    assert info["numTraining"] == 2 == len(_cases(brain_dir, "Tr"))
    assert info["file_ending"] == ".nii.gz"


def test_brain_files_shapes_spacing_and_classes(brain_dir, brain_template):
    for split, count in (("Tr", 2), ("Ts", 1)):
        cases = _cases(brain_dir, split)
        assert len(cases) == count
        for case in cases:
            img_path = brain_dir / f"images{split}" / f"{case}_0000.nii.gz"
            lab_path = brain_dir / f"labels{split}" / f"{case}.nii.gz"
            img, lab = nib.load(str(img_path)), nib.load(str(lab_path))
            assert img.shape == lab.shape == brain_template.grid.shape
            # 181 x 217 x 181 mm head at 3 mm
            assert all(abs(s - mm / SPACING) <= 3 for s, mm in zip(img.shape, (181, 217, 181)))
            assert np.allclose(img.header.get_zooms(), SPACING) and np.allclose(lab.header.get_zooms(), SPACING)
            s_img, s_lab = sitk.ReadImage(str(img_path)), sitk.ReadImage(str(lab_path))
            assert np.allclose(s_img.GetSpacing(), SPACING)
            assert np.allclose(s_img.GetOrigin(), s_lab.GetOrigin())
            assert np.allclose(s_img.GetDirection(), s_lab.GetDirection())
            assert img.get_data_dtype() == np.float32
            labels = np.asarray(lab.dataobj)
            assert np.unique(labels).tolist() == list(range(len(brain.BRAIN_LABELS))), case
            assert np.asarray(img.dataobj).std() > 0


def test_brain_dataset_files_match_seeded_cases(brain_dir, brain_template):
    image, label = brain.make_brain_case(brain_template, augment.case_rng(SEED, "train", 1))
    np.testing.assert_array_equal(_load(brain_dir / "imagesTr" / "brain_001_0000.nii.gz"), image)
    np.testing.assert_array_equal(_load(brain_dir / "labelsTr" / "brain_001.nii.gz"), label)
    image, label = brain.make_brain_case(brain_template, augment.case_rng(SEED, "test", 0))
    np.testing.assert_array_equal(_load(brain_dir / "imagesTs" / "brain_test_000_0000.nii.gz"), image)
    np.testing.assert_array_equal(_load(brain_dir / "labelsTs" / "brain_test_000.nii.gz"), label)


def test_brain_case_determinism(brain_template):
    a_img, a_lab = brain.make_brain_case(brain_template, augment.case_rng(3, "train", 0))
    b_img, b_lab = brain.make_brain_case(brain_template, augment.case_rng(3, "train", 0))
    c_img, c_lab = brain.make_brain_case(brain_template, augment.case_rng(4, "train", 0))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert np.abs(a_img - c_img).mean() > 1.0  # intensity units of ch2 (0..254)
    assert (a_lab != c_lab).mean() > 0.01


def test_brain_train_test_disjoint(brain_dir):
    train, test = _cases(brain_dir, "Tr"), _cases(brain_dir, "Ts")
    assert not set(train) & set(test)
    for t in test:
        t_img = _load(brain_dir / "imagesTs" / f"{t}_0000.nii.gz")
        t_lab = _load(brain_dir / "labelsTs" / f"{t}.nii.gz")
        for c in train:
            assert np.abs(t_img - _load(brain_dir / "imagesTr" / f"{c}_0000.nii.gz")).mean() > 1.0
            assert (t_lab != _load(brain_dir / "labelsTr" / f"{c}.nii.gz")).mean() > 0.01


def test_case_rng_streams_differ_between_splits():
    draws = {(split, i): augment.case_rng(0, split, i).random(4).tolist() for split in ("train", "test") for i in range(5)}
    assert len({tuple(v) for v in draws.values()}) == len(draws)


def test_existing_dataset_refused_unless_forced(brain_dir):
    raw = brain_dir.parent
    with pytest.raises(DatasetExistsError, match="--force"):
        brain.build_brain_dataset(raw, dataset_id=901, name="TestBrain", num_train=1, num_test=0, spacing=SPACING)
    with pytest.raises(DatasetExistsError, match="same dataset id"):
        brain.build_brain_dataset(raw, dataset_id=901, name="OtherName", num_train=1, num_test=0, spacing=SPACING)


# ---------------------------------------------------------------- abdomen dataset

def test_abdomen_remap_by_name_keeps_voxel_counts():
    root = sources.totalsegmentator_files()
    for modality, (_, seg_file, task) in abdomen.ABDOMEN_SOURCES.items():
        class_map = abdomen.read_class_map(root / "totalsegmentator/map_to_binary.py", task)
        seg = _load(root / seg_file).astype(np.int64)
        remapped = abdomen.remap_by_name(seg, class_map, abdomen.ABDOMEN_LABELS)
        ids = {name: i for i, name in class_map.items()}
        for organ in abdomen.ABDOMEN_ORGANS:
            count = int((seg == ids[organ]).sum())
            assert count > 0, (modality, organ)
            assert int((remapped == abdomen.ABDOMEN_LABELS[organ]).sum()) == count
        assert int((remapped > 0).sum()) == int(np.isin(seg, [ids[o] for o in abdomen.ABDOMEN_ORGANS]).sum())


def test_abdomen_remap_rejects_missing_organ():
    with pytest.raises(ValueError, match="liver"):
        abdomen.remap_by_name(np.zeros((2, 2, 2), np.int64), {1: "spleen"}, {"background": 0, "spleen": 1, "liver": 2})


def test_abdomen_dataset(abdomen_dir, abdomen_sources):
    info = json.loads((abdomen_dir / "dataset.json").read_text())
    assert info["labels"] == abdomen.ABDOMEN_LABELS
    assert sorted(info["labels"].values()) == list(range(len(info["labels"])))
    assert info["channel_names"]["0"].casefold() != "ct"  # CT normalisation would be wrong for the MR cases
    assert info["numTraining"] == 2 and info["file_ending"] == ".nii.gz"
    for split in ("Tr", "Ts"):
        cases = _cases(abdomen_dir, split)
        assert sorted(c.rsplit("_", 1)[1] for c in cases) == ["ct", "mr"]
        for case in cases:
            img = nib.load(str(abdomen_dir / f"images{split}" / f"{case}_0000.nii.gz"))
            lab = _load(abdomen_dir / f"labels{split}" / f"{case}.nii.gz")
            assert img.shape == lab.shape == abdomen_sources[case.rsplit("_", 1)[1]].grid.shape
            assert np.allclose(img.header.get_zooms(), SPACING)
            present = set(np.unique(lab).tolist())
            assert present <= set(range(len(abdomen.ABDOMEN_LABELS)))
            assert abdomen.ABDOMEN_LABELS["liver"] in present  # the largest shared organ survives any deformation


def test_abdomen_case_determinism(abdomen_sources):
    mr = abdomen_sources["mr"]
    a = abdomen.make_abdomen_case(mr, augment.case_rng(1, "train", 0))
    b = abdomen.make_abdomen_case(mr, augment.case_rng(1, "train", 0))
    c = abdomen.make_abdomen_case(mr, augment.case_rng(2, "train", 0))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


# ---------------------------------------------------------------- CLI and fetch errors

def test_cli_make_dataset(tmp_path, monkeypatch, capsys):
    args = ["make-dataset", "brain", "--raw-dir", str(tmp_path), "--dataset-id", "903", "--name", "CliBrain",
            "--num-train", "1", "--num-test", "1", "--spacing", "4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Dataset903_CliBrain" in out and "imagesTr: 1 cases" in out
    assert json.loads((tmp_path / "Dataset903_CliBrain" / "dataset.json").read_text())["mambahome"]["spacing"] == 4.0
    assert main(args) == 2  # bad input: the dataset exists
    assert "--force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    monkeypatch.delenv("nnUNet_raw", raising=False)
    assert main(["make-dataset", "abdomen"]) == 2
    assert "nnUNet_raw" in capsys.readouterr().err


def test_fetch_failure_names_command_and_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MRICRON_SYSTEM_DIR", tmp_path / "absent")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    with pytest.raises(sources.SourceFetchError) as err:
        sources.mricron_templates(tmp_path / "cache")
    message = str(err.value)
    assert "apt-get download mricron-data=" in message and "Fix:" in message


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from nnunetv2_mambahome.datasets.sources import fetch_once

    target, log, me, other = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])

    def fetch(staging):
        with open(log, "a") as f:
            f.write("fetch\\n")
        time.sleep(1)  # a download: the other process checks the target meanwhile
        (staging / "data.txt").write_text("complete")

    me.touch()
    while not other.exists():  # both start together
        time.sleep(0.01)
    print(fetch_once(target, lambda t: (t / "data.txt").is_file(), fetch))
""")


def test_concurrent_fetches_of_one_source_fetch_once(tmp_path):
    """Two processes asking for the same missing source (e.g. two test workers): one fetches, the other waits
    for the lock and uses that copy."""
    target, log = tmp_path / "cache" / "source-1.0", tmp_path / "fetches.log"
    ready = [tmp_path / "ready-0", tmp_path / "ready-1"]
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(target), str(log), str(ready[i]), str(ready[1 - i])],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [r.communicate(timeout=60) for r in racers]
    assert [r.returncode for r in racers] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [str(target)] * 2
    assert log.read_text() == "fetch\n"
    assert (target / "data.txt").read_text() == "complete"
    assert sorted(p.name for p in target.parent.iterdir()) == ["source-1.0", "source-1.0.lock"]  # no staging left
