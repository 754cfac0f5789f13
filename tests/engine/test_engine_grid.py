import numpy as np
import pytest

from vemrestore.engine import block_grid
from vemrestore.errors import UserInputError


def test_block_grid_tiles_the_volume_once_with_ragged_edges():
    shape = (40, 70, 90)
    blocks = block_grid(shape, (32, 32, 48))
    assert len(blocks) == 2 * 3 * 2
    cover = np.zeros(shape, dtype=np.int32)
    for block in blocks:
        cover[block.region] += 1
    assert (cover == 1).all()
    assert blocks[-1].id == "1_2_1"
    assert blocks[-1].region == (slice(32, 40), slice(64, 70), slice(48, 90))


@pytest.mark.parametrize("bad", [(0, 8, 8), (8, 8), (8.5, 8, 8), 8])
def test_block_grid_rejects_bad_block_shape(bad):
    with pytest.raises(UserInputError, match="block_shape"):
        block_grid((8, 8, 8), bad)
