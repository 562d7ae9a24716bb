"""The search's Optuna study: resumed after a stop, its cut trials asked again, never
reopened once ended."""

from tests.support.params import shipped


def _config(**values):
    return shipped("search", enabled=True, **values)


def test_a_study_that_did_not_end_is_resumed_and_its_cut_trials_asked_again(tmp_path):
    """The bookkeeping the kill -9 test relies on, without a kill: the same prefix opens
    the same study until it ends; a trial left RUNNING is failed as interrupted (so it does
    not count) and enqueued again with its params; an ended study is never reopened."""
    from optuna.trial import TrialState

    from components.search.space import suggest
    from pipelines.search.study import Study, interrupted

    url, cfg = f"sqlite:///{tmp_path / 'search.db'}", _config(n_trials=3, families=["classical"])
    first = Study("kiln-search-0123456789ab", url, cfg)
    assert first.name == "kiln-search-0123456789ab-1"
    done = first.study.ask()
    suggest(done, cfg)
    first.study.tell(done, [0.5, 1.0, 1.0])
    cut = first.study.ask()
    _, params = suggest(cut, cfg)  # and then the search was killed

    again = Study("kiln-search-0123456789ab", url, cfg)
    assert again.name == first.name and again.finished() == 1
    assert again.requeue_interrupted() == [cut.number] and again.finished() == 1
    retry = again.study.ask()
    assert suggest(retry, cfg) == ("classical", params) and retry.user_attrs == {"retry_of": cut.number}
    trials = again.study.get_trials(deepcopy=False)
    assert trials[cut.number].state == TrialState.FAIL and interrupted(again.study.user_attrs, trials[cut.number])
    assert not interrupted(again.study.user_attrs, trials[done.number])
    assert trials[done.number].state == TrialState.COMPLETE

    again.end()
    assert Study("kiln-search-0123456789ab", url, cfg).name == "kiln-search-0123456789ab-2"
    assert Study("kiln-search-ba9876543210", url, cfg).name == "kiln-search-ba9876543210-1"
