"""Model files: the round trip keeps outputs; foreign, damaged, pickled and newer files are refused."""

import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from mtl_core.errors import ModelFileError
from mtl_core.model import create_model
from mtl_core.modelfile import load_model, read_spec, save_model
from mtl_core.spec import FORMAT_VERSION, describe

from .conftest import make_spec


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    spec = make_spec("segmentation", "mtl")
    spec.training = {"metrics": {"test_miou": 0.5}}
    model = create_model(spec).eval()
    path = save_model(tmp_path / "m.mtl.safetensors", spec, model.state_dict())
    return path, spec, model


def test_round_trip_gives_the_same_outputs_and_spec(saved):
    path, spec, model = saved
    spec2, model2 = load_model(path)
    assert spec2.to_dict() == spec.to_dict()
    x = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        a, b = model(x), model2(x)
    assert torch.equal(a["main"], b["main"])
    assert torch.equal(a["aux"]["swir"], b["aux"]["swir"])
    assert "swir1" in describe(spec2) and "test_miou: 0.5000" in describe(spec2)


def test_half_precision_file_is_smaller_and_close(saved, tmp_path):
    path, spec, model = saved
    half = save_model(tmp_path / "h.mtl.safetensors", spec, model.state_dict(), half=True)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    _, model2 = load_model(half)
    x = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x)["main"], model2(x)["main"], atol=0.05)


def test_save_leaves_no_temporary_files(saved):
    path, _, _ = saved
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_pickled_objects_are_refused_without_being_loaded(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelFileError, match="never unpickles"):
        load_model(raw)
    zipped = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "obj": Evil()}, zipped)
    marker.unlink(missing_ok=True)  # torch.save itself ran __reduce__ when pickling
    with pytest.raises(ModelFileError, match="PyTorch zip checkpoint"):
        load_model(zipped)
    assert not marker.exists()


def test_truncated_file_is_refused(saved, tmp_path):
    path, _, _ = saved
    cut = tmp_path / "cut.mtl.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(cut)


@pytest.mark.parametrize("content", [b"", b"hello", b"\x00" * 64, b"GIF89a" + b"\x00" * 100])
def test_foreign_bytes_are_refused(tmp_path, content):
    p = tmp_path / "x.bin"
    p.write_bytes(content)
    with pytest.raises(ModelFileError):
        load_model(p)


def test_safetensors_without_our_spec_is_refused(tmp_path):
    p = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(p), metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="not an MTL Explain model"):
        read_spec(p)


def _rewrite_spec(path, out, **changes):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    spec = json.loads(header["__metadata__"]["mtl_spec"])
    spec.update(changes)
    header["__metadata__"]["mtl_spec"] = json.dumps(spec)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    out.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + n:])
    return out


def test_newer_format_version_is_refused_with_the_fix(saved, tmp_path):
    path, _, _ = saved
    newer = _rewrite_spec(path, tmp_path / "newer.mtl.safetensors", format_version=FORMAT_VERSION + 1)
    with pytest.raises(ModelFileError, match="newer than this MTL Explain understands.*update"):
        load_model(newer)


def test_weights_that_do_not_fit_the_spec_are_refused(saved, tmp_path):
    path, _, _ = saved
    other = _rewrite_spec(path, tmp_path / "other.mtl.safetensors", variant="unimodal", aux=[])
    with pytest.raises(ModelFileError, match="do not fit the architecture"):
        load_model(other)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nope.mtl.safetensors")


def test_a_header_length_whose_low_byte_looks_like_pickle_is_still_loaded(saved, tmp_path):
    """safetensors files start with the header length; a low byte of 0x80 must not read as a pickle."""
    _, spec, model = saved
    for extra in range(300):
        spec.name = "m" + "x" * extra
        path = save_model(tmp_path / "odd.mtl.safetensors", spec, model.state_dict())
        if path.read_bytes()[0] == 0x80:
            break
    else:  # pragma: no cover
        pytest.fail("no name length gave a header length with low byte 0x80")
    assert load_model(path)[0].name == spec.name


def _bands(mean=50.0, name="blue"):
    return [{"name": "optical", "units": "DN", "bands": [{"name": name, "mean": mean, "std": 10.0}]}]


@pytest.mark.parametrize("changes, message", [
    ({"patch_size": "abc"}, "patch_size 'abc' must be a whole number"),
    ({"patch_size": 0}, "patch_size 0 must be a whole number of pixels"),
    ({"inputs": _bands(mean="abc")}, "mean and std must be finite numbers"),
    ({"inputs": _bands(mean=None)}, "mean and std must be finite numbers"),
    ({"training": ["not", "a", "mapping"]}, "'training' entry must be a mapping"),
    ({"input_nodata": "zero"}, "input_nodata 'zero' must be a number or null"),
    ({"format_version": "1"}, "format version '1' is not a whole number"),
    ({"aux": [{"name": "../../../../tmp/x", "bands": [{"name": "a"}]}]}, "modality name '../../../../tmp/x' is not"),
    ({"aux": [{"name": "a/b", "bands": [{"name": "a"}]}]}, "modality name 'a/b' is not allowed"),
    ({"aux": [{"name": "", "bands": [{"name": "a"}]}]}, "modality name '' is not allowed"),
    ({"inputs": _bands(name="x/../y")}, "band name 'x/../y' of 'optical' is not allowed"),
    ({"classes": [{"value": 1, "name": "a"}] * 1_000_000}, "lists 1000000 classes; MTL Explain handles at most 1024"),
    ({"classes": [{"value": 1, "name": "a"}, {"value": 1, "name": "b"}]}, r"repeated: \[1\]"),
    ({"classes": [{"value": "1", "name": "a"}, {"value": 2, "name": "b"}]}, "value must be a whole number"),
    ({"architecture": {"encoder_depth": 9}}, "encoder_depth 9 must be 3, 4 or 5"),
    ({"architecture": "big"}, "malformed"),
])
def test_malformed_specs_are_one_clear_error(saved, tmp_path, changes, message):
    path = _rewrite_spec(saved[0], tmp_path / "bad.mtl.safetensors", **changes)
    with pytest.raises(ModelFileError, match=message) as caught:
        read_spec(path)
    assert len(str(caught.value)) < 400  # one line, not megabytes of values


def test_damaged_headers_are_one_clear_error(saved, tmp_path):
    data = saved[0].read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    for damage in ({"data_offsets": ["0", "x"]}, {"dtype": "F32"}):
        header[name] = {**{k: v for k, v in header[name].items() if k != "data_offsets"}, **damage}
        new = json.dumps(header).encode()
        out = tmp_path / "bad.mtl.safetensors"
        out.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + n:])
        with pytest.raises(ModelFileError, match="damaged header"):
            read_spec(out)
    header = json.loads(data[8:8 + n])
    header["__metadata__"]["mtl_spec"] = "[" * 100_000 + "]" * 100_000
    new = json.dumps(header).encode()
    out.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + n:])
    with pytest.raises(ModelFileError, match="not valid JSON text"):
        read_spec(out)
