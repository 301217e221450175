"""Your own data through every command: a folder of images and a table train, evaluate with probes, report,
serve (a table row drawn as bars) and write their codes with `aelab encode` as .npy, .csv or .parquet; an input
that does not fit the run is one line and exit 2."""
import base64
import io
import json

import numpy as np
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from .conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


_run = run_cli  # tests.conftest: aelab ARGS in-process


def _one_line_exit_2(code, err, *needles):
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("aelab: error: "), err
    for n in needles:
        assert n in err, (n, err)


@pytest.fixture
def image_folder(tmp_path, mnist5k):
    """3 classes x 15 real digits as PNG files in class folders."""
    root = tmp_path / "digits"
    x, y = mnist5k.x_train.numpy(), mnist5k.y_train.numpy()
    for digit in (0, 1, 7):
        (root / f"d{digit}").mkdir(parents=True)
        for i in np.flatnonzero(y == digit)[:15]:
            Image.fromarray(x[i, 0]).save(root / f"d{digit}" / f"{i}.png")
    return root


@pytest.fixture
def table(tmp_path):
    """400 rows of scikit-learn's digits: 64 numeric columns, a string column and a label column."""
    from sklearn.datasets import load_digits

    d = load_digits()
    lines = [",".join([*(f"px{j}" for j in range(64)), "colour", "label"])]
    for k, (row, label) in enumerate(zip(d.data[:400], d.target[:400])):
        lines.append(",".join([*(str(int(v)) for v in row), ("red", "green", "blue")[k % 3], f"digit{label}"]))
    path = tmp_path / "table.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_image_folder_trains_evaluates_and_writes_its_codes(image_folder, tmp_path, capsys):
    run = tmp_path / "runs" / "conv"
    code, _, err = _run(["train", "--model", "conv", "--dataset", str(image_folder), "--epochs", "2",
                         "--latent-dim", "8", "--out", str(run), "--quiet"], capsys)
    assert code == 0, err
    record = json.loads((run / "data.json").read_text())
    assert record["transform"]["kind"] == "images" and record["classes"] == ["d0", "d1", "d7"]
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["test_samples"] == 9 and "linear_probe_accuracy" in evaluation  # 20% of 45, stratified
    assert (run / "reconstructions.png").is_file() and (run / "report.html").is_file()

    code, out, err = _run(["encode", str(run), "--input", str(image_folder), "--out", str(tmp_path / "c.npy")], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "c.npy").shape == (45, 8)
    code, _, err = _run(["encode", str(run), "--out", str(tmp_path / "test.csv")], capsys)  # the run's test set
    assert code == 0, err
    table = pa_csv.read_csv(tmp_path / "test.csv")
    assert table.column_names[:3] == ["file", "label", "z0"] and table.num_rows == 9
    assert set(table["label"].to_pylist()) == {"d0", "d1", "d7"}
    assert all(name.endswith(".png") for name in table["file"].to_pylist())


def test_a_table_trains_with_its_label_column_and_encodes_to_parquet(table, tmp_path, capsys):
    run = tmp_path / "runs" / "dense"
    code, _, err = _run(["train", "--model", "dense", "--dataset", str(table), "--label-column", "label",
                         "--epochs", "8", "--latent-dim", "8", "--out", str(run), "--quiet"], capsys)
    assert code == 0, err
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["linear_probe_accuracy"] > 0.5  # ten balanced classes: a trivial classifier gets ~0.1
    assert (run / "feature_reconstructions.png").is_file()  # a table's rows drawn as bars in the report

    out = tmp_path / "codes.parquet"
    code, _, err = _run(["encode", str(run), "--input", str(table), "--out", str(out)], capsys)
    assert code == 0, err
    codes = pq.read_table(out)
    assert codes.num_rows == 400 and codes.column_names[:3] == ["row", "label", "z0"] and len(codes.column_names) == 10
    assert codes["row"].to_pylist()[:3] == ["0", "1", "2"]

    # a table without one of the run's columns: one line naming it
    text = table.read_text().splitlines()
    header = text[0].split(",")
    drop = header.index("px5")
    missing = tmp_path / "missing.csv"
    missing.write_text("\n".join(",".join(v for j, v in enumerate(line.split(",")) if j != drop) for line in text))
    code, _, err = _run(["encode", str(run), "--input", str(missing), "--out", str(tmp_path / "x.npy")], capsys)
    _one_line_exit_2(code, err, "px5")


def test_inputs_that_do_not_fit_the_run(image_folder, table, tmp_path, capsys):
    run = tmp_path / "runs" / "dense-img"
    code, _, err = _run(["train", "--model", "dense", "--dataset", str(image_folder), "--epochs", "1",
                         "--latent-dim", "4", "--out", str(run), "--quiet", "--no-report"], capsys)
    assert code == 0, err
    code, _, err = _run(["encode", str(run), "--input", str(table), "--out", str(tmp_path / "x.npy")], capsys)
    _one_line_exit_2(code, err, "images")
    code, _, err = _run(["encode", str(run), "--input", str(image_folder), "--out", str(tmp_path / "x.txt")], capsys)
    _one_line_exit_2(code, err, ".npy, .csv or .parquet")
    code, _, err = _run(["encode", str(run), "--input", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.npy")],
                        capsys)
    _one_line_exit_2(code, err, "nothing")
    code, _, err = _run(["train", "--dataset", "mnist5k", "--label-column", "y"], capsys)
    _one_line_exit_2(code, err, "--label-column applies to your own data")


def test_the_explorer_draws_a_table_row_as_bars(table, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from aelab.web import create_app

    run = tmp_path / "runs" / "dense"
    assert _run(["train", "--model", "dense", "--dataset", str(table), "--label-column", "label", "--epochs", "1",
                 "--latent-dim", "4", "--out", str(run), "--quiet", "--no-report"], capsys)[0] == 0
    client = TestClient(create_app(run, method="pca", device="cpu", log=None))
    assert client.get("/api/runs").status_code == 200
    item = client.get("/api/items/0").json()
    images = {k: Image.open(io.BytesIO(base64.b64decode(item[k].split(",", 1)[1])))
              for k in ("image", "reconstruction")}
    width, height = images["image"].size
    assert width == 6 * 67 and height == 96  # one bar per feature (64 + 3 one-hot colours), not a pixel grid
    recon = np.asarray(images["reconstruction"].convert("RGB"))
    assert (recon == (192, 57, 43)).all(-1).any()  # the reconstruction's red bars in front of the input's
