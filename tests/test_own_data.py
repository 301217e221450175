"""The user's own data by path: folders of images, tables and .npz files, and new inputs read as a run reads them.

Every test builds its data in a temporary folder: images with Pillow from scikit-learn's bundled digits
(8x8, scaled up to 28x28), tables from the same digits (64 pixel columns, a text column and a label column).
"""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import aelab
from aelab.data import folders, read_inputs, transform_of
from aelab.data.dataset import split_indices
from aelab.data.memmap import MemmapDataset
from aelab.errors import AelabError

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
EXTRA = {0: "jpg", 1: "gif", 2: "bmp", 3: "tif", 4: "webp"}  # the rest of each class: 28x28 gray PNGs


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture
def messages(caplog):
    """The "aelab" logger's records (the command line may have stopped it from reaching the root logger)."""
    logger = logging.getLogger("aelab")
    logger.addHandler(caplog.handler)
    old = logger.propagate, logger.level
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.propagate, logger.level = old


def digit(digits, i: int) -> Image.Image:
    """Digit ``i`` as a 28x28 gray image (0..16 scaled to 0..240)."""
    return Image.fromarray((digits.images[i] * 15).astype(np.uint8)).resize((28, 28), Image.Resampling.NEAREST)


def write_folder(root: Path, digits, per_class: int = 20, start: int = 0) -> dict[str, Image.Image]:
    """``per_class`` images of each digit in class folders named by the word (sorted: eight, five, ...): in each
    class one 32x32 RGB JPEG, one GIF, BMP, TIFF and WebP, the rest 28x28 gray PNGs. Returns {name: image}."""
    written, seen = {}, dict.fromkeys(range(10), 0)
    for i in range(start, len(digits.target)):
        c = int(digits.target[i])
        k = seen[c]
        if k >= per_class:
            continue
        seen[c] += 1
        img, ext = digit(digits, i), EXTRA.get(k, "png")
        if ext == "jpg":
            img = img.convert("RGB").resize((32, 32))
        name = f"{WORDS[c]}/{k:02d}.{ext}"
        (root / WORDS[c]).mkdir(parents=True, exist_ok=True)
        img.save(root / name, lossless=True) if ext == "webp" else img.save(root / name)
        written[name] = img
        if all(v >= per_class for v in seen.values()):
            break
    return written


@pytest.fixture
def folder(tmp_path, digits):
    root = tmp_path / "digits"
    return root, write_folder(root, digits)


def rows_by_id(data) -> dict[str, torch.Tensor]:
    ids = data.meta["ids"]
    return {**dict(zip(ids["train"], data.x_train)), **dict(zip(ids["test"], data.x_test))}


def count_opens(monkeypatch) -> list:
    opened = []
    real = folders.Image.open

    def counted(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real(path, *args, **kwargs)
    monkeypatch.setattr(folders.Image, "open", counted)
    return opened


# ---------------------------------------------------------------------------------------------- folders
def test_a_folder_of_class_folders_gives_sorted_classes_a_stratified_split_and_one_size(folder, messages):
    root, written = folder
    data = aelab.load_dataset(str(root), progress=False)
    assert isinstance(data, MemmapDataset)  # training reads the cached file through a memory map
    assert data.classes == sorted(WORDS) and data.name == "digits"
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (160, 1, 28, 28)  # the most common size and mode
    assert data.x_test.shape == (40, 1, 28, 28)
    assert torch.bincount(data.y_test).tolist() == [4] * 10 and torch.bincount(data.y_train).tolist() == [16] * 10
    assert "28x28, 1 channel" in messages.text and "10 images of other sizes" in messages.text
    ids = data.meta["ids"]
    assert sorted(ids["train"] + ids["test"]) == sorted(written)
    for name, label in zip(ids["test"], data.y_test.tolist()):
        assert name.split("/")[0] == data.classes[label]
    record = json.loads(json.dumps(data.meta["record"]))  # what the run folder writes as data.json
    assert record["split"] == "stratified" and record["test_fraction"] == 0.2 and record["seed"] == 0
    assert record["transform"] == data.meta["transform"] == {"kind": "images", "size": [28, 28], "channels": 1,
                                                             "classes": sorted(WORDS)}
    assert record["rows"] == {"train": 160, "test": 40} and record["classes"] == sorted(WORDS)
    # the training rows lie shuffled in the file (a block of the memory map is a random sample, not one class)
    assert len(set(data.y_train[:16].tolist())) > 3


def test_pixels_of_every_format_arrive_unchanged_or_converted_by_known_rules(folder):
    root, written = folder
    rows = rows_by_id(aelab.load_dataset(str(root), progress=False))
    for name, img in written.items():
        if name.endswith((".png", ".bmp", ".tif", ".gif", ".webp")):  # lossless, already 28x28 gray
            assert torch.equal(rows[name][0], torch.from_numpy(np.array(img))), name
    red = root / "one" / "red.png"
    Image.new("RGB", (30, 30), (255, 0, 0)).save(red)  # gray = 0.299 * 255 = 76.2, resized or not
    rows = rows_by_id(aelab.load_dataset(str(root), progress=False))
    assert (rows["one/red.png"] == 76).all()


def test_image_size_and_channels_bring_every_image_to_that_shape(folder):
    root, _ = folder
    data = aelab.load_dataset(root, image_size=(32, 24), channels=3, progress=False)
    assert data.x_train.shape == (160, 3, 32, 24) and data.meta["transform"]["size"] == [32, 24]
    gray = rows_by_id(data)["zero/10.png"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])  # gray as RGB: three equal planes
    with pytest.raises(AelabError, match="channels must be 1 .gray. or 3"):
        aelab.load_dataset(root, channels=2)
    with pytest.raises(AelabError, match="image_size must be two positive numbers"):
        aelab.load_dataset(root, image_size=(0, 28))


def test_a_second_load_decodes_nothing_and_a_changed_file_decodes_again(folder, monkeypatch):
    root, _ = folder
    opened = count_opens(monkeypatch)
    first = aelab.load_dataset(root, progress=False)
    assert len(opened) == 2 * 200  # the size survey reads the headers, then every image is decoded once
    opened.clear()
    again = aelab.load_dataset(root, progress=False)
    assert opened == [] and torch.equal(again.x_test, first.x_test)
    other = aelab.load_dataset(root, seed=1, progress=False)  # another split: rows rearranged, not decoded
    assert opened == []
    assert other.meta["ids"]["test"] != first.meta["ids"]["test"]
    rows, other_rows = rows_by_id(first), rows_by_id(other)
    assert all(torch.equal(rows[k], other_rows[k]) for k in rows)
    st = os.stat(root / "five" / "05.png")
    os.utime(root / "five" / "05.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    aelab.load_dataset(root, progress=False)
    assert len(opened) == 2 * 200  # a changed file: a new cache


def test_read_inputs_on_the_training_folder_reproduces_its_rows_and_labels(folder, monkeypatch, tmp_path):
    root, _ = folder
    data = aelab.load_dataset(root, progress=False)
    opened = count_opens(monkeypatch)
    x, ids, y = read_inputs(root, data.meta["transform"], progress=False)
    assert opened == []  # the cached decode is reused
    assert x.shape == (200, 1, 28, 28) and ids == sorted(ids) and len(set(ids)) == 200
    rows = rows_by_id(data)
    assert all(torch.equal(x[i], rows[name]) for i, name in enumerate(ids))
    labels = dict(zip(data.meta["ids"]["train"] + data.meta["ids"]["test"], torch.cat([data.y_train, data.y_test])))
    assert y.tolist() == [int(labels[name]) for name in ids]
    one, names, no_y = read_inputs(root / "three" / "10.png", data.meta["transform"])
    assert names == ["10.png"] and no_y is None and torch.equal(one[0], rows["three/10.png"])
    wide = read_inputs(root, {**data.meta["transform"], "size": [32, 32]}, progress=False)[0]
    assert wide.shape == (200, 1, 32, 32)
    shutil.copytree(root / "three", tmp_path / "new" / "three")  # one class folder among the run's classes
    _, names, y = read_inputs(tmp_path / "new", data.meta["transform"], progress=False)
    assert len(names) == 20 and y.tolist() == [data.classes.index("three")] * 20


def test_train_and_test_folders_give_the_split(tmp_path, digits):
    root = tmp_path / "split"
    train = write_folder(root / "train", digits, per_class=6)
    test = write_folder(root / "test", digits, per_class=2, start=900)
    data = aelab.load_dataset(root, progress=False)
    assert len(data.x_train) == 60 and len(data.x_test) == 20 and data.classes == sorted(WORDS)
    assert sorted(data.meta["ids"]["test"]) == sorted(f"test/{n}" for n in test)
    assert sorted(data.meta["ids"]["train"]) == sorted(f"train/{n}" for n in train)
    assert data.meta["record"]["split"] == "folders" and data.meta["record"]["test_fraction"] is None
    (root / "test").rename(root / "val")
    with pytest.raises(AelabError, match="has a train/ folder but no test/ folder"):
        aelab.load_dataset(root)


def test_a_flat_folder_is_unlabelled_and_one_class_folder_too_with_a_warning(tmp_path, digits, messages):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(30):
        digit(digits, i).save(flat / f"{i}.png")
    data = aelab.load_dataset(flat, progress=False)
    assert data.y_train is None and data.classes is None and len(data.x_test) == 6
    assert data.meta["record"]["split"] == "random"
    one = tmp_path / "one"
    one.mkdir()
    flat.rename(one / "cats")
    data = aelab.load_dataset(one, progress=False)
    assert data.y_train is None and data.classes is None
    assert "one class folder ('cats')" in messages.text and "probes are skipped" in messages.text


def test_unreadable_images_stop_with_their_name_or_are_skipped_with_one_warning(folder, messages, monkeypatch):
    root, _ = folder
    good = (root / "three" / "10.png").read_bytes()
    (root / "three" / "truncated.png").write_bytes(good[:len(good) // 2])
    with pytest.raises(AelabError, match=r"cannot read the image three/truncated.png .*truncated.*--skip-bad"):
        aelab.load_dataset(root, progress=False)  # its header reads, its pixels do not
    (root / "five" / "notes.png").write_bytes(b"not an image at all")
    with pytest.raises(AelabError, match=r"cannot read the image five/notes.png .*--skip-bad"):
        aelab.load_dataset(root, progress=False)  # the size survey finds it
    messages.clear()
    data = aelab.load_dataset(root, skip_bad=True, progress=False)
    warnings = [r for r in messages.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "left out 2 unreadable image(s)" in warnings[0].getMessage()
    assert "five/notes.png" in warnings[0].getMessage()
    assert len(data.x_train) + len(data.x_test) == 200
    assert not {"three/truncated.png", "five/notes.png"} & set(data.meta["ids"]["train"] + data.meta["ids"]["test"])
    opened = count_opens(monkeypatch)
    with pytest.raises(AelabError, match="five/notes.png .*--skip-bad"):  # the cache remembers them
        aelab.load_dataset(root, progress=False)
    assert opened == []


def test_an_empty_folder_a_missing_path_and_one_image_are_refused(tmp_path, digits):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(AelabError, match="holds no image files"):
        aelab.load_dataset(tmp_path / "empty")
    with pytest.raises(AelabError, match="no file or folder .*nowhere"):
        aelab.load_dataset(str(tmp_path / "nowhere"))
    digit(digits, 0).save(tmp_path / "one.png")
    with pytest.raises(AelabError, match="is one image; a dataset is many"):
        aelab.load_dataset(tmp_path / "one.png")
    with pytest.raises(AelabError, match="label_column does not apply to a folder of images"):
        aelab.load_dataset(tmp_path / "empty", label_column="y")
    with pytest.raises(AelabError, match="unknown dataset 'photos'.*or give the path of a folder"):
        aelab.load_dataset("photos")


def test_a_validation_split_holds_out_the_last_shuffled_training_rows(folder):
    root, _ = folder
    data = aelab.load_dataset(root, progress=False)
    kept, val = data.split_validation(0.25)
    assert len(kept.x_train) == 120 and len(kept.y_train) == 120 and val["image"].shape == (40, 1, 28, 28)
    assert len(kept.train_batches()) == 120 and len(kept.meta["ids"]["train"]) == 120
    assert torch.equal(val["image"], data.x_train[120:]) and torch.equal(kept.x_test, data.x_test)
    assert len(kept.to("cpu").train_batches()) == 120


def test_a_folder_trains_a_conv_autoencoder_and_keeps_its_record(folder, tmp_path, one_thread):
    root, _ = folder
    run = aelab.train("conv", str(root), out=tmp_path / "run", epochs=1, batch_size=64, progress=False, log=None,
                      report=False)
    assert np.isfinite(run.last["test_loss"])
    record = json.loads((tmp_path / "run" / "data.json").read_text())
    assert record["transform"]["kind"] == "images" and record["classes"] == sorted(WORDS)


# ---------------------------------------------------------------------------------------------- tables
def write_table(path: Path, digits, rows=None, sep=",", extra=None) -> None:
    """64 pixel columns p0..p63, a text column 'ink' (light/medium/heavy by total ink), the digit in 'label'."""
    rows = range(len(digits.target)) if rows is None else rows
    ink = digits.data.sum(1)
    cuts = np.quantile(ink, [1 / 3, 2 / 3])
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow([f"p{j}" for j in range(64)] + ["ink", "label"] + list(extra or {}))
        for i in rows:
            level = ["light", "medium", "heavy"][int(np.searchsorted(cuts, ink[i]))]
            w.writerow([int(v) for v in digits.data[i]] + [level, int(digits.target[i])]
                       + [v[i] for v in (extra or {}).values()])


@pytest.fixture
def table(tmp_path, digits):
    path = tmp_path / "digits.csv"
    write_table(path, digits)
    return path


def test_a_table_is_standardised_and_one_hot_encoded_by_its_training_rows(table, digits):
    data = aelab.load_dataset(table, label_column="label")
    t = data.meta["transform"]
    assert data.classes == [str(d) for d in range(10)] and data.x_train.dtype == torch.float32
    assert t["columns"] == [f"p{j}" for j in range(64)] + ["ink=heavy", "ink=light", "ink=medium"]
    n_test = sum(round(k * 0.2) for k in np.bincount(digits.target))
    assert data.x_test.shape == (n_test, 67) and data.x_train.shape == (1797 - n_test, 67)
    tr = torch.as_tensor([int(i) for i in data.meta["ids"]["train"]])
    assert torch.equal(data.y_train, torch.as_tensor(digits.target)[tr])
    x = data.x_train.double()
    constant = digits.data[tr.numpy()].std(0) == 0  # p0 is blank in every digit: divided by 1, not 0
    assert constant[0] and (x[:, :64][:, constant] == 0).all() and torch.isfinite(data.x_test).all()
    assert x[:, :64][:, ~constant].mean(0).abs().max() < 1e-6
    assert (x[:, :64][:, ~constant].std(0, unbiased=False) - 1).abs().max() < 1e-5
    assert t["numeric"]["p5"][0] == pytest.approx(digits.data[tr.numpy(), 5].mean())
    assert (data.x_train[:, 64:].sum(1) == 1).all() and (data.x_test[:, 64:].sum(1) == 1).all()
    record = json.loads(json.dumps(data.meta["record"]))
    assert record["transform"]["label_column"] == "label" and record["split"] == "stratified"


def test_read_inputs_applies_the_saved_transform_to_tables_matched_by_name(table, digits, tmp_path):
    data = aelab.load_dataset(table, label_column="label", drop_columns=["p0"])
    t = data.meta["transform"]
    assert "p0" not in t["columns"] and len(t["columns"]) == 66
    x, ids, y = read_inputs(table, t)
    rows = dict(zip(data.meta["ids"]["train"] + data.meta["ids"]["test"], torch.cat([data.x_train, data.x_test])))
    assert ids == [str(i) for i in range(1797)] and all(torch.equal(x[i], rows[str(i)]) for i in range(1797))
    assert y.tolist() == digits.target.tolist()
    pq.write_table(pa.table({c: pa.array(np.asarray(v)) for c, v in  # the same rows, columns reversed, as parquet
                             reversed(list(_columns(table).items()))}), tmp_path / "rev.parquet")
    x2, _, y2 = read_inputs(tmp_path / "rev.parquet", t)
    assert torch.allclose(x2, x) and torch.equal(y2, y)
    no_label = tmp_path / "nolabel.tsv"
    with open(table) as f, open(no_label, "w") as g:
        for line in f:
            g.write("\t".join(line.rstrip("\n").split(",")[:-1]) + "\n")
    x3, _, y3 = read_inputs(no_label, t)
    assert torch.equal(x3, x) and y3 is None


def _columns(path: Path) -> dict:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return {name: [r[j] if name == "ink" else int(r[j]) for r in rows[1:]] for j, name in enumerate(rows[0])}


def test_new_rows_that_do_not_fit_get_one_line_naming_what_differs(table, digits, tmp_path):
    t = aelab.load_dataset(table, label_column="label").meta["transform"]
    cols = _columns(table)
    def write(name, **change):
        path = tmp_path / name
        new = {k: v for k, v in {**cols, **change}.items() if v is not None}
        pq.write_table(pa.table(new), path)
        return path
    with pytest.raises(AelabError, match=r"lacks the column\(s\) p7 that the run was trained on"):
        read_inputs(write("a.parquet", p7=None), t)
    with pytest.raises(AelabError, match=r"has the column\(s\) extra that the run does not know"):
        read_inputs(write("b.parquet", extra=[1] * 1797), t)
    with pytest.raises(AelabError, match="column 'p9' .* holds text, but the run read it as numbers"):
        read_inputs(write("c.parquet", p9=["dark"] * 1797), t)
    with pytest.raises(AelabError, match="label '12' .* is not one of the run's classes"):
        read_inputs(write("d.parquet", label=[12] * 1797), t)
    unseen, _, _ = read_inputs(write("e.parquet", ink=["neon"] * 1797), t)
    assert (unseen[:, 64:] == 0).all()  # a category the training rows did not have: all zeros
    with pytest.raises(AelabError, match="trained on a table .*but .* is a folder"):
        read_inputs(tmp_path, t)
    with pytest.raises(AelabError, match=r"trained on images \(1 x 28 x 28\), but .*digits.csv is a table"):
        read_inputs(table, {"kind": "images", "size": [28, 28], "channels": 1, "classes": None})


def test_bad_tables_get_one_line_each(tmp_path, digits):
    def csv_file(name, text):
        (tmp_path / name).write_text(text)
        return tmp_path / name
    with pytest.raises(AelabError, match=r"no column 'lable' \(did you mean 'label'\?\)"):
        aelab.load_dataset(csv_file("a.csv", "x,label\n1,a\n2,b\n3,a\n4,b\n5,a\n"), label_column="lable")
    with pytest.raises(AelabError, match="b.csv line 4 has 2 fields but the header has 3"):
        aelab.load_dataset(csv_file("b.csv", "x,y,z\n1,2,3\n4,5,6\n7,8\n9,1,2\n"))
    with pytest.raises(AelabError, match=r"column 'y' of .* is empty .*--drop-columns y"):
        aelab.load_dataset(csv_file("c.csv", "x,y\n1,\n2,\n3,\n4,\n5,\n"))
    bad = csv_file("d.csv", "x,y,z\n1,2,3\n4,nan,6\n7,inf,9\n1,,2\n5,5,5\n6,6,6\n")
    with pytest.raises(AelabError, match=r"column 'y' of .* has 3 rows with NaN, infinite or missing values .*"
                                         r"--impute mean\|median"):
        aelab.load_dataset(bad)
    filled = aelab.load_dataset(bad, impute="mean", test_fraction=0.5, seed=0)
    rows = rows_by_id(filled)
    assert all(float(rows[i][1]) == 0 for i in ("1", "2", "3"))  # the training mean, standardised: exactly 0
    median = aelab.load_dataset(bad, impute="median", test_fraction=0.5, seed=0).meta["transform"]
    tr = [int(i) for i in filled.meta["ids"]["train"]]
    finite = [v for i, v in enumerate([2, None, None, None, 5, 6]) if i in tr and v is not None]
    assert median["fill"]["y"] == float(np.median(finite))
    with pytest.raises(AelabError, match="holds numbers and text such as '\\?'"):
        aelab.load_dataset(csv_file("e.csv", "x,y\n" + "".join(f"{i},{i}\n" for i in range(30)) + "1,?\n"))
    late = csv_file("late.csv", "x,y\n" + "".join(f"{i},{i}\n" for i in range(150_000)) + "1,?\n")
    with pytest.raises(AelabError, match="column 'y' of .*late.csv holds numbers and text such as '\\?'"):
        aelab.load_dataset(late)  # pyarrow guessed numbers from the first megabyte; the text comes later
    with pytest.raises(AelabError, match="column 'name' .* an identifier or free text"):
        aelab.load_dataset(csv_file("f.csv", "x,name\n" + "".join(f"{i},n{i}\n" for i in range(200))))
    with pytest.raises(AelabError, match="label column 'y' .* holds one value .*'a'"):
        aelab.load_dataset(csv_file("g.csv", "x,y\n1,a\n2,a\n3,a\n"), label_column="y")
    with pytest.raises(AelabError, match="has no rows"):
        aelab.load_dataset(csv_file("h.csv", "x,y\n"))
    with pytest.raises(AelabError, match="impute must be one of mean, median"):
        aelab.load_dataset(bad, impute="zero")


def test_a_constant_column_and_text_labels(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("k,v,kind\n" + "".join(f"7,{i % 5},{['b', 'a', 'c'][i % 3]}\n" for i in range(30)))
    data = aelab.load_dataset(path, label_column="kind")
    assert data.classes == ["a", "b", "c"] and data.meta["transform"]["numeric"]["k"] == [7.0, 1.0]
    assert (data.x_train[:, 0] == 0).all() and torch.isfinite(data.x_train).all()


# ---------------------------------------------------------------------------------------------- .npz
def test_npz_files_give_images_or_features_with_their_labels(tmp_path, digits):
    images = (digits.images[:100] * 15).astype(np.uint8)  # (N, 8, 8): gains a channel
    np.savez(tmp_path / "a.npz", x=images, y=np.array(WORDS)[digits.target[:100]])
    a = aelab.load_dataset(tmp_path / "a.npz")
    assert a.x_train.shape == (80, 1, 8, 8) and a.classes == sorted(WORDS) and a.meta["record"]["split"] == "stratified"
    assert a.meta["transform"] == {"kind": "images", "size": [8, 8], "channels": 1, "classes": sorted(WORDS)}
    rows = rows_by_id(a)
    assert all(torch.equal(rows[str(i)][0], torch.from_numpy(images[i])) for i in range(100))
    nhwc = np.repeat(images[..., None], 3, axis=3)  # (N, H, W, 3) is laid out (N, 3, H, W)
    np.savez(tmp_path / "b.npz", x_train=nhwc[:70], x_test=nhwc[70:], y_train=digits.target[:70],
             y_test=digits.target[70:100])
    b = aelab.load_dataset(tmp_path / "b.npz")
    assert b.x_train.shape == (70, 3, 8, 8) and b.meta["ids"]["test"][0] == "x_test:0"
    assert b.classes == list("0123456789")
    assert b.meta["record"]["split"] == "arrays" and torch.equal(b.y_test, torch.as_tensor(digits.target[70:100]))
    np.savez(tmp_path / "c.npz", x=digits.data[:50])
    c = aelab.load_dataset(tmp_path / "c.npz")
    assert c.y_train is None and c.x_train.dtype == torch.float32
    assert c.meta["transform"] == {"kind": "arrays", "shape": [64], "dtype": "float32", "classes": None}
    x, ids, y = read_inputs(tmp_path / "a.npz", a.meta["transform"])
    assert torch.equal(x[:, 0], torch.from_numpy(images)) and y.tolist() == [sorted(WORDS).index(WORDS[t])
                                                                         for t in digits.target[:100]]
    with pytest.raises(AelabError, match=r"holds samples of shape \(1, 8, 8\), but the run was trained on \(64,\)"):
        read_inputs(tmp_path / "a.npz", c.meta["transform"])
    np.savez(tmp_path / "d.npz", images=images)
    with pytest.raises(AelabError, match=r"no array named 'x' \(it holds images\)"):
        aelab.load_dataset(tmp_path / "d.npz")
    np.savez(tmp_path / "e.npz", x=np.where(digits.data[:50] > 10, np.nan, digits.data[:50]))
    with pytest.raises(AelabError, match="'x' of .* has \\d+ NaN or infinite values"):
        aelab.load_dataset(tmp_path / "e.npz")
    (tmp_path / "f.npz").write_bytes(b"garbage")
    with pytest.raises(AelabError, match="not a readable .npz"):
        aelab.load_dataset(tmp_path / "f.npz")


def test_transform_of_a_named_dataset_reads_a_folder_at_its_size(small_mnist, folder):
    root, _ = folder
    t = transform_of(small_mnist)
    assert t == {"kind": "images", "size": [28, 28], "channels": 1, "classes": small_mnist.classes}
    x, ids, y = read_inputs(root, t, progress=False)
    assert x.shape == (200, 1, 28, 28) and y is None  # class folders that are not the run's classes: no labels


def test_split_indices_is_what_a_table_split_uses(table, digits):
    data = aelab.load_dataset(table, label_column="label", seed=3, test_fraction=0.3)
    _, te = split_indices(1797, 0.3, 3, digits.target)
    assert [int(i) for i in data.meta["ids"]["test"]] == te.tolist()
