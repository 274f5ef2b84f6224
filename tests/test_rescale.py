"""``batchlab rescale``: each rule against arithmetic done here by hand, the edge cases of k, the
parser's refusals and the command's table, JSON and one-line errors."""

import json
import math

import pytest

from batchlab.errors import BatchlabError
from batchlab.rescale import Setting, format_setting, parse_setting, rescale


def by_name(result) -> dict:
    return {row["name"]: row for row in result.table()}


def test_sgd_is_linear_with_5_epochs_of_warmup_and_keeps_momentum_and_decay():
    result = rescale(Setting(256, 0.1, "sgd", momentum=0.9, weight_decay=1e-4), 2048)  # k = 8
    assert result.setting.batch_size == 2048
    assert result.setting.lr == pytest.approx(0.8)
    assert result.setting.warmup_epochs == 5
    assert (result.setting.momentum, result.setting.weight_decay) == (0.9, 1e-4)
    assert by_name(result)["lr"]["source"].startswith("Goyal")
    assert any("warmup over 5 epochs" in note for note in result.notes)
    assert not any("32" in note and "validated" in note for note in result.notes)
    # a longer warmup already given is kept; k = 64 is beyond Goyal's k = 32
    longer = rescale(Setting(256, 0.1, "sgd", warmup_epochs=8), 256 * 64)
    assert longer.setting.warmup_epochs == 8 and longer.setting.lr == pytest.approx(6.4)
    assert any("validated" in note and "32" in note for note in longer.notes)


def test_adam_square_root_rule_power_beta2_and_kept_beta1():
    result = rescale(Setting(64, 3e-4, "adam", beta1=0.9, beta2=0.999, eps=1e-8), 1024)  # k = 16, sqrt 4
    beta2 = 1.0
    for _ in range(16):
        beta2 *= 0.999
    new = result.setting
    assert new.lr == pytest.approx(1.2e-3) and new.eps == pytest.approx(2.5e-9)
    assert new.beta2 == pytest.approx(beta2, rel=1e-12) and new.beta1 == 0.9
    # beta2's half-life, counted in samples, is the same at both batch sizes (Marek et al.)
    assert 1024 * math.log(0.5) / math.log(new.beta2) == pytest.approx(64 * math.log(0.5) / math.log(0.999))
    assert "1-beta2' = k(1-beta2)" in by_name(result)["beta2"]["formula"]
    assert not any("beta1'" in note for note in result.notes)  # 1 - 16 x 0.1 < 0: no value to give
    small_k = rescale(Setting(64, 3e-4, "adam", beta1=0.9), 256)  # k = 4: 1 - 4 x 0.1 = 0.6
    assert any("beta1' = 0.6" in note for note in small_k.notes) and small_k.setting.beta1 == 0.9


def test_malladi_beta2_form_is_flagged_where_meaningless():
    result = rescale(Setting(1, 1e-4, "adam", beta2=0.999), 2048)  # k(1 - beta2) = 2.048
    assert 0 < result.setting.beta2 < 1
    assert any("2.048" in note and "meaningless" in note for note in result.notes)
    assert not any("meaningless" in note for note in rescale(Setting(1, 1e-4, "adam"), 512).notes)


def test_adamw_weight_decay_keeps_the_timescale():
    before = Setting(64, 3e-4, "adamw", weight_decay=0.01)
    new = rescale(before, 1024).setting  # k = 16: wd x sqrt(16)
    assert new.weight_decay == pytest.approx(0.04)
    n = 50_000
    tau = before.batch_size / (before.lr * before.weight_decay * n)
    assert new.batch_size / (new.lr * new.weight_decay * n) == pytest.approx(tau)
    unset = rescale(Setting(64, 3e-4, "adamw"), 1024)
    assert unset.setting.weight_decay is None and any("weight_decay not given" in n for n in unset.notes)


def test_rmsprop_follows_adam_without_beta1():
    result = rescale(Setting(32, 1e-3, "rmsprop", beta2=0.99), 128)  # k = 4
    assert result.setting.lr == pytest.approx(2e-3) and result.setting.eps == pytest.approx(0.5e-7)
    assert result.setting.beta2 == pytest.approx(0.99 * 0.99 * 0.99 * 0.99)
    assert "beta1" not in by_name(result)


@pytest.mark.parametrize("setting", [Setting(64, 0.1, "sgd", momentum=0.9, weight_decay=5e-4),
                                     Setting(64, 3e-4, "adam", beta2=0.95),
                                     Setting(64, 3e-4, "adamw", weight_decay=0.1)])
def test_same_batch_size_changes_nothing(setting):
    assert rescale(setting, 64).setting == setting


def test_smaller_batch_uses_the_same_formulas_without_warmup():
    sgd = rescale(Setting(256, 0.1, "sgd"), 64).setting  # k = 1/4
    assert sgd.lr == pytest.approx(0.025) and sgd.warmup_epochs == 0
    adam = rescale(Setting(256, 4e-4, "adamw", beta2=0.99, weight_decay=0.1), 64).setting  # sqrt(k) = 1/2
    assert adam.lr == pytest.approx(2e-4) and adam.eps == pytest.approx(2e-7)
    assert adam.beta2 == pytest.approx(math.sqrt(math.sqrt(0.99))) and adam.weight_decay == pytest.approx(0.05)


def test_noise_scale_notes():
    adam, sgd = Setting(64, 3e-4, "adam"), Setting(64, 0.1, "sgd")
    assert any("surge" in n for n in rescale(adam, 1024, noise_scale=300).notes)
    assert not any("noise scale" in n for n in rescale(adam, 256, noise_scale=300).notes)
    assert any("McCandlish" in n for n in rescale(sgd, 1024, noise_scale=300).notes)
    with pytest.raises(BatchlabError, match="noise scale"):
        rescale(adam, 1024, noise_scale=-1)


def test_parse_setting_and_its_round_trip():
    parsed = parse_setting("B=64, lr=3e-4 optimizer=AdamW beta2 = 0.999 wd=0.01 warmup_epochs=2")
    assert parsed == Setting(64, 3e-4, "adamw", beta2=0.999, weight_decay=0.01, warmup_epochs=2.0)
    assert parse_setting("batch_size=8 lr=1 optimizer=sgd momentum=0.9") == Setting(8, 1.0, "sgd", momentum=0.9)
    new = rescale(parsed, 1000).setting
    again = parse_setting(format_setting(new))
    for name in ("batch_size", "lr", "beta2", "eps", "weight_decay", "warmup_epochs"):
        assert getattr(again, name) == pytest.approx(getattr(new, name), rel=1e-5)
    close = Setting(1, 1e-4, "adam", beta2=0.9999999)
    assert parse_setting(format_setting(close)).beta2 < 1  # never printed as 1


@pytest.mark.parametrize("text, key", [
    ("B=0 lr=1 optimizer=sgd", "B"), ("B=64.5 lr=1 optimizer=sgd", "B"), ("B=64 lr=0 optimizer=sgd", "lr"),
    ("B=64 lr=1 optimizer=lamb", "optimizer"), ("B=64 lr=1 optimizer=adam beta2=1", "beta2"),
    ("B=64 lr=1 optimizer=adam beta1=-0.1", "beta1"), ("B=64 lr=1 optimizer=adam eps=0", "eps"),
    ("B=64 lr=1 optimizer=adamw wd=-1", "weight_decay"), ("B=64 lr=1 optimizer=adam foo=3", "foo"),
    ("lr=1 optimizer=sgd", "B"), ("B=64 optimizer=sgd", "lr"), ("B=64 lr=abc optimizer=sgd", "lr"),
    ("B=64 lr1 optimizer=sgd", "lr1")])
def test_bad_setting_names_the_key(text, key):
    with pytest.raises(BatchlabError, match=key) as error:
        parse_setting(text)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("to_batch", [0, -8, 2.5, True])
def test_bad_new_batch_size(to_batch):
    with pytest.raises(BatchlabError, match="new batch size"):
        rescale(Setting(64, 0.1, "sgd"), to_batch)


FROM = "B=64 lr=3e-4 optimizer=adamw beta2=0.999 weight_decay=0.01"


def test_command_prints_table_notes_and_a_setting_to_paste_back(cli):
    code, out, err = cli("rescale", "--from", FROM, "--to-batch", "1024", "--noise-scale", "300")
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "Malladi et al. 2022" in out and "Bergsma et al. 2025" in out and "surge" in out
    pasted = parse_setting(out.strip().splitlines()[-1])
    assert pasted.batch_size == 1024 and pasted.lr == pytest.approx(1.2e-3)
    assert pasted.weight_decay == pytest.approx(0.04)


def test_command_json(cli):
    code, out, err = cli("rescale", "--from", FROM, "--to-batch", "16", "--json")  # k = 1/4
    assert code == 0, err
    result = json.loads(out)
    assert result["setting"]["lr"] == pytest.approx(1.5e-4) and result["setting"]["batch_size"] == 16
    assert {"lr", "eps", "beta2", "beta1", "weight_decay"} <= {rule["name"] for rule in result["rules"]}


def test_command_bad_setting_is_one_line(cli):
    code, out, err = cli("rescale", "--from", "B=64 lr=3e-4 optimizer=adam beta2=1.5", "--to-batch", "128")
    assert code == 2 and not out
    assert err.count("\n") == 1 and err.startswith("error:") and "beta2" in err and "Traceback" not in err
