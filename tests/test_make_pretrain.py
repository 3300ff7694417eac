"""medln.make.pretrain: the language stage continues a saved model and touches only its decoder."""

import json
import shutil

from safetensors.torch import load_file

from medln.backbones import ASSETS
from medln.make import pretrain

FROZEN = ("vision_tower.", "multi_modal_projector.")  # as saved (the checkpoint format has no "model." prefix)


def test_decoder_only_stage_keeps_the_vision_side_and_the_earlier_record(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain, "score_base", lambda out, log=print: {})  # scoring is the slow suite's
    init = tmp_path / "stage1"
    shutil.copytree(ASSETS / "medln-tiny", init)
    out = tmp_path / "stage2"
    pretrain.pretrain_tiny(pretrain.PretrainArgs(out=str(out), init=str(init), steps=2, studies=6, batch_size=4,
                                                 stream=104, extra=True, decoder_only=True), log=lambda *_: None)
    before, after = load_file(init / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    frozen = [k for k in before if k.startswith(FROZEN)]
    assert frozen and all(before[k].equal(after[k]) for k in frozen)
    assert any(not before[k].equal(after[k]) for k in before if not k.startswith(FROZEN))
    info = json.loads((out / "MEDLN_PRETRAIN.json").read_text())
    stage = info["pretraining"]
    assert stage["init"] == str(init) and stage["decoder_only"] and stage["extra_wordings"] and stage["stream"] == 104
    first = json.loads((init / "MEDLN_PRETRAIN.json").read_text())
    assert info["earlier_stage"]["pretraining"] == first["pretraining"]
