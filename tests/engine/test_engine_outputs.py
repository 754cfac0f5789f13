"""Several outputs of one method in one pass: Zarr (resumable) or in memory, and their checks."""

import numpy as np
import pytest
import zarr

import vemrestore.engine._predict as engine_predict
from vemrestore import io
from vemrestore.engine import predict_array, predict_volume
from vemrestore.errors import UserInputError
from vemrestore.io import Volume
from vemrestore.methods import RESTORED

SHAPE = (6, 32, 32)
BLOCK_SHAPE = (4, 16, 16)  # 2 x 2 x 2 = 8 blocks
NUM_BLOCKS = 8
CRASH_AFTER = 2


def read_zarr(path):
    return zarr.open_array(store=str(path), path="0", mode="r")[:]


def ledger(path):
    return path.with_name(f".{path.name}.partial") / ".vemrestore" / "done"


@pytest.fixture
def volume(random_volume):
    return Volume(random_volume(SHAPE), voxel_size=(30.0, 5.0, 5.0), source="stack")


def test_one_pass_writes_every_zarr_output(tmp_path, volume, box_filter_with_aux, counting):
    inner = box_filter_with_aux()
    method = counting(inner)
    out = predict_volume(
        method,
        volume,
        tmp_path / "restored.zarr",
        extra_outputs={"aux": tmp_path / "aux.zarr"},
        block_shape=BLOCK_SHAPE,
        output_dtype="float16",
        progress=False,
    )
    assert out == tmp_path / "restored.zarr"
    assert method.calls == NUM_BLOCKS
    assert set(inner.requested) == {(RESTORED, "aux")}
    expected = predict_array(box_filter_with_aux(), volume.data, outputs=[RESTORED, "aux"])
    assert set(expected) == {RESTORED, "aux"}
    restored, aux = read_zarr(out), read_zarr(tmp_path / "aux.zarr")
    assert restored.dtype == np.float16 and aux.dtype == np.float32  # extras stay float32
    np.testing.assert_allclose(restored, expected[RESTORED], atol=1e-3)
    np.testing.assert_array_equal(aux, 2 * volume.data + 1)
    np.testing.assert_array_equal(aux, expected["aux"])
    for name, path in ((RESTORED, out), ("aux", tmp_path / "aux.zarr")):
        assert io.open_volume(path).voxel_size == (30.0, 5.0, 5.0)
        run = zarr.open_group(store=str(path), mode="r").attrs["vemrestore"]["fingerprint"]
        assert run["outputs"] == [RESTORED, "aux"] and run["output"] == name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aux.zarr", "restored.zarr"]


def test_resume_recomputes_blocks_not_done_in_every_output(
    tmp_path, volume, box_filter_with_aux, counting
):
    paths = {RESTORED: tmp_path / "restored.zarr", "aux": tmp_path / "aux.zarr"}

    def run(method, **options):
        return predict_volume(
            method,
            volume,
            paths[RESTORED],
            extra_outputs={"aux": paths["aux"]},
            block_shape=BLOCK_SHAPE,
            progress=False,
            **options,
        )

    with pytest.raises(RuntimeError, match="simulated crash"):  # fails on the 3rd block
        run(counting(box_filter_with_aux(), fail_after=CRASH_AFTER), num_workers=1)
    assert not paths[RESTORED].exists() and not paths["aux"].exists()
    done = sorted(p.name for p in ledger(paths["aux"]).iterdir())
    assert done == sorted(p.name for p in ledger(paths[RESTORED]).iterdir())
    assert len(done) == CRASH_AFTER
    # A block written to the restoration only (killed before its aux write was marked).
    (ledger(paths["aux"]) / done[0]).unlink()

    # The same outputs are part of the run's settings.
    with pytest.raises(UserInputError, match=r"different settings.*outputs"):
        predict_volume(
            box_filter_with_aux(), volume, paths[RESTORED], block_shape=BLOCK_SHAPE, progress=False
        )

    method = counting(box_filter_with_aux())
    run(method)
    assert method.calls == NUM_BLOCKS - (CRASH_AFTER - 1)
    assert not ledger(paths[RESTORED]).parent.parent.exists()
    assert not ledger(paths["aux"]).parent.parent.exists()
    reference = {RESTORED: tmp_path / "ref.zarr", "aux": tmp_path / "ref_aux.zarr"}
    predict_volume(
        box_filter_with_aux(),
        volume,
        reference[RESTORED],
        extra_outputs={"aux": reference["aux"]},
        block_shape=BLOCK_SHAPE,
        progress=False,
    )
    for name in (RESTORED, "aux"):
        np.testing.assert_array_equal(read_zarr(paths[name]), read_zarr(reference[name]))


def test_extra_outputs_only(tmp_path, volume, box_filter_with_aux):
    method = box_filter_with_aux()
    aux = tmp_path / "aux.zarr"
    out = predict_volume(
        method, volume, None, extra_outputs={"aux": aux}, block_shape=BLOCK_SHAPE, progress=False
    )
    assert out == aux and [p.name for p in tmp_path.iterdir()] == ["aux.zarr"]
    assert method.requested == [("aux",)] * NUM_BLOCKS
    np.testing.assert_array_equal(read_zarr(aux), 2 * volume.data + 1)
    for extra_outputs in (None, {}):
        with pytest.raises(UserInputError, match="nothing to write"):
            predict_volume(method, volume, None, extra_outputs=extra_outputs, progress=False)


def test_in_memory_outputs(tmp_path, volume, box_filter_with_aux, counting):
    method = counting(box_filter_with_aux())
    out = predict_volume(
        method,
        volume,
        tmp_path / "restored.tif",
        extra_outputs={"aux": tmp_path / "aux.h5:/maps/aux"},
        block_shape=BLOCK_SHAPE,
        output_dtype="uint16",
        progress=False,
    )
    assert out == tmp_path / "restored.tif"
    assert method.calls == NUM_BLOCKS
    expected = predict_array(box_filter_with_aux(), volume.data, outputs=(RESTORED, "aux"))
    restored = io.open_volume(out)
    aux = io.open_volume(tmp_path / "aux.h5:/maps/aux")
    assert restored.dtype == np.uint16 and aux.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(restored.data), np.rint(expected[RESTORED]))
    np.testing.assert_array_equal(np.asarray(aux.data), expected["aux"])
    assert aux.voxel_size == (30.0, 5.0, 5.0)


def test_in_memory_limit_counts_every_output(tmp_path, volume, box_filter_with_aux, monkeypatch):
    one = np.prod(SHAPE) * 4
    monkeypatch.setattr(engine_predict, "MAX_IN_MEMORY_BYTES", one + 1)
    with pytest.raises(UserInputError, match=r"extra_outputs\['aux'\].*\.zarr"):
        predict_volume(
            box_filter_with_aux(),
            volume,
            tmp_path / "a.tif",
            extra_outputs={"aux": tmp_path / "b.tif"},
            progress=False,
        )
    assert not list(tmp_path.iterdir())
    predict_volume(box_filter_with_aux(), volume, tmp_path / "a.tif", progress=False)


@pytest.mark.parametrize(
    ("output", "extra", "match"),
    [
        ("a.zarr", "b.tif", r"output_path='.*a\.zarr' is Zarr but extra_outputs\['aux'\]"),
        ("a.tif", "b.zarr", r"extra_outputs\['aux'\]='.*b\.zarr' is Zarr but output_path"),
        ("a.zarr", "a.zarr", "same file"),
        ("a.tif", "in.tif", "is the input"),
        ("a.zarr", "b.zarr:/0", "OME-Zarr group"),
        ("a.zarr", "b.png", "unknown volume format"),
    ],
)
def test_bad_extra_output_paths_are_refused(
    tmp_path, box_filter_with_aux, counting, output, extra, match
):
    volume = Volume(np.zeros((2, 4, 4), np.float32), source=str(tmp_path / "in.tif"))
    method = counting(box_filter_with_aux())
    with pytest.raises(UserInputError, match=match):
        predict_volume(
            method,
            volume,
            tmp_path / output,
            extra_outputs={"aux": f"{tmp_path}/{extra}"},
            progress=False,
        )
    assert method.calls == 0
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("factory", "extra_outputs", "match"),
    [
        ("box_filter_with_aux", {"nope": "n.zarr"}, r"'nope'.*choose from: aux\)"),
        ("box_filter_with_aux", {RESTORED: "r.zarr"}, "goes to output_path.*: aux"),
        ("box_filter", {"aux": "aux.zarr"}, "'aux'.*none: it has only 'restored'"),
        ("box_filter_with_aux", ["aux"], "must map output names to paths"),
        ("box_filter_with_aux", {"aux": 3}, r"extra_outputs\['aux'\] must be a path"),
    ],
)
def test_unknown_extra_outputs_are_user_errors(request, tmp_path, factory, extra_outputs, match):
    method = request.getfixturevalue(factory)()
    with pytest.raises(UserInputError, match=match):
        predict_volume(
            method,
            Volume(np.zeros((2, 4, 4), np.float32)),
            tmp_path / "o.zarr",
            extra_outputs=extra_outputs,
            progress=False,
        )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("existing", [RESTORED, "aux"])
def test_each_existing_output_needs_overwrite(
    tmp_path, volume, box_filter_with_aux, counting, existing
):
    paths = {RESTORED: tmp_path / "restored.zarr", "aux": tmp_path / "aux.zarr"}
    (paths[existing] / "old").mkdir(parents=True)
    method = counting(box_filter_with_aux())
    options = {"extra_outputs": {"aux": paths["aux"]}, "block_shape": BLOCK_SHAPE}
    with pytest.raises(UserInputError, match=f"{paths[existing].name} exists.*overwrite"):
        predict_volume(method, volume, paths[RESTORED], progress=False, **options)
    assert method.calls == 0
    assert [p.name for p in tmp_path.iterdir()] == [paths[existing].name]

    predict_volume(method, volume, paths[RESTORED], overwrite=True, progress=False, **options)
    assert method.calls == NUM_BLOCKS
    assert not (paths[existing] / "old").exists()
    np.testing.assert_array_equal(read_zarr(paths["aux"]), 2 * volume.data + 1)


def test_predict_array_outputs(box_filter_with_aux, random_volume):
    x = random_volume((3, 8, 8))
    method = box_filter_with_aux()
    both = predict_array(method, x, outputs=("aux", RESTORED))
    assert list(both) == ["aux", RESTORED]
    assert all(a.dtype == np.float32 for a in both.values())
    np.testing.assert_array_equal(both[RESTORED], predict_array(method, x))
    assert list(predict_array(method, x, outputs=["aux"])) == ["aux"]
    assert method.requested[-1] == ("aux",)
    for outputs, match in [
        (["nope"], "choose from: restored, aux"),
        ("aux", "sequence of output names"),
        ([], "sequence of output names"),
        (["aux", "aux"], "twice"),
    ]:
        with pytest.raises(UserInputError, match=match):
            predict_array(method, x, outputs=outputs)


class DropsAux:
    """Wraps a two-output method but returns a broken result for ``"aux"``."""

    def __init__(self, method, broken):
        self.method = method
        self.broken = broken

    def __getattr__(self, name):
        if name == "method":
            raise AttributeError(name)
        return getattr(self.method, name)

    def predict_block(self, block, request):
        arrays = self.method.predict_block(block, request)
        if self.broken == "missing":
            del arrays["aux"]
        elif self.broken == "shape":
            arrays["aux"] = arrays["aux"][:, :-1]
        else:
            return arrays["aux"]
        return arrays


@pytest.mark.parametrize(
    ("broken", "match"),
    [
        ("missing", "returned no 'aux'"),
        ("shape", "returned shape .* for 'aux'"),
        ("array", "returned ndarray, expected a dict"),
    ],
)
def test_bad_results_from_the_method_are_reported(
    tmp_path, volume, box_filter_with_aux, broken, match
):
    method = DropsAux(box_filter_with_aux(), broken)
    with pytest.raises(RuntimeError, match=f"{match}.*a bug in the method"):
        predict_volume(
            method,
            volume,
            tmp_path / "o.zarr",
            extra_outputs={"aux": tmp_path / "aux.zarr"},
            progress=False,
        )
