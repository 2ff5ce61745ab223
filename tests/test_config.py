import pytest

from tandem_lm_eval.harness.config import ConfigError, TandemConfig


def parse(**kw):
    return TandemConfig.from_model_args(kw)


def test_demo_default_when_no_models_named():
    cfg = parse()
    assert cfg.is_demo and cfg.mentor.model == cfg.intern.model == "demo"
    assert cfg.budgets == (100, 500, 1000) and cfg.num_stages == 4
    assert cfg.mode == "tandem" and cfg.max_gen_toks == 8192


def test_one_role_missing_is_an_error():
    with pytest.raises(ConfigError, match="not 'intern'"):
        parse(mentor="/models/big")


def test_unknown_key_names_it_and_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        parse(mentr="x")
    msg = str(err.value)
    assert "'mentr'" in msg and "budgets" in msg and "mentor_backend" in msg


def test_unknown_backend_option_is_refused_with_options_listed():
    with pytest.raises(ConfigError) as err:
        parse(mentor="demo", intern="demo", intern_backend="hf", intern_flash=True)
    assert "intern_flash" in str(err.value) and "intern_dtype" in str(err.value)


@pytest.mark.parametrize("value", ["[100,500,1000]", "100/500/1000", [100, 500, 1000], "100:500:1000"])
def test_budget_spellings(value):
    assert parse(budgets=value).budgets == (100, 500, 1000)


@pytest.mark.parametrize("value", ["[500,100]", "0/10", "a/b", "[100,100]"])
def test_bad_budgets(value):
    with pytest.raises(ConfigError, match="budgets"):
        parse(budgets=value)


def test_thresholds_must_have_one_per_stage():
    assert parse(thresholds="[0.5,0.6,0.7,0.8]").thresholds == (0.5, 0.6, 0.7, 0.8)
    with pytest.raises(ConfigError, match="4 are needed"):
        parse(thresholds="[0.5,0.6]")
    with pytest.raises(ConfigError, match="thresholds"):
        parse(thresholds="[0.5,0.6,0.7,1.8]")


def test_role_options_and_shared_dtype():
    cfg = parse(
        mentor="/m",
        intern="/i",
        mentor_backend="hf",
        intern_backend="hf",
        dtype="bfloat16",
        intern_dtype="float32",
        mentor_num_params="32e9",
        thinking=True,
        intern_thinking=False,
        batch_size="4",
        device="cpu",
    )
    assert cfg.mentor.options == {"dtype": "bfloat16", "device": "cpu", "batch_size": 4}
    assert cfg.intern.options["dtype"] == "float32"
    assert cfg.mentor.num_params == 32e9 and cfg.intern.num_params is None
    assert cfg.mentor.thinking is True and cfg.intern.thinking is False
    # the same count written the way model cards write it
    assert (
        parse(
            mentor="/m", intern="/i", mentor_backend="hf", intern_backend="hf", mentor_num_params="32B"
        ).mentor.num_params
        == 32e9
    )


def test_lm_eval_plumbing_keys_are_accepted():
    cfg = parse(batch_size="auto", max_batch_size=None, device="cuda:0")
    assert "batch_size" not in cfg.intern.options


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"max_gen_toks": "-3"}, "max_gen_toks"),
        ({"classifier_strict": "maybe"}, "classifier_strict"),
        ({"mentor": "a", "intern": "b", "mentor_backend": "tgi"}, "not a backend"),
        ({"mentor": "a", "intern": "b", "mentor_num_params": "lots"}, "mentor_num_params"),
    ],
)
def test_bad_values(kw, match):
    with pytest.raises(ConfigError, match=match):
        parse(**kw)


def test_prices_are_role_keys():
    cfg = parse(
        mentor="m",
        intern="i",
        mentor_backend="hf",
        intern_backend="hf",
        mentor_price_in="$0.15",
        mentor_price_out=0.6,
    )
    assert cfg.mentor.prices.input_per_million == 0.15 and cfg.mentor.prices.output_per_million == 0.6
    assert cfg.intern.prices is None and "price_in" not in cfg.mentor.options
    with pytest.raises(ConfigError, match="give both mentor_price_in and mentor_price_out"):
        parse(mentor="m", intern="i", mentor_price_in=1)
    with pytest.raises(ConfigError, match="mentor_price_out"):
        parse(mentor="m", intern="i", mentor_price_in=1, mentor_price_out="cheap")


def test_mode_is_checked_with_the_other_model_args_before_any_model_loads():
    with pytest.raises(ConfigError, match="unknown mode 'oracle'"):
        TandemConfig.from_model_args({"mentor": "/m", "intern": "/i", "mode": "oracle"})
    with pytest.raises(ConfigError, match="fixed:<stage number>"):
        TandemConfig.from_model_args({"mentor": "/m", "intern": "/i", "mode": "fixed:x"})
    assert (
        TandemConfig.from_model_args({"mentor": "/m", "intern": "/i", "mode": " fixed:2"}).mode == "fixed:2"
    )


def test_a_recorded_model_can_only_be_the_mentor():
    with pytest.raises(ConfigError, match="only be the mentor"):
        TandemConfig.from_model_args({"mentor": "/m", "intern": "/i", "intern_backend": "recorded"})
