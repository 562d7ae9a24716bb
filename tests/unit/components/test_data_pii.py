import json
import subprocess
import sys

import pandas as pd
import pytest
from pydantic import ValidationError

from components.data.bbc import read_bbc
from components.data.pii import PiiReport, scan
from components.data.pii_config import BUILT_IN, PiiConfig
from components.data.pii_recognizers import cn_id_valid
from components.errors import KilnError
from tests.support.repo import ROOT

CFG = PiiConfig(patterns={"EMPLOYEE_ID": r"EMP-\d{6}"}, deny_list={"PROJECT": ["Nightingale", "夜莺计划"]})
# (text, the same text masked); every planted value is one finding.
PLANTED = [
    ("我的邮箱是zhang.san@example.com谢谢", "我的邮箱是<EMAIL>谢谢"),
    ("Write to john.doe@example.co.uk.", "Write to <EMAIL>."),
    ("Call +44 20 7946 0958 or +1 (415) 555-2671 today", "Call <PHONE> or <PHONE> today"),
    ("电话13812345678，或者+86 138 1234 5678。", "电话<PHONE>，或者<PHONE>。"),
    (
        "Paid with 4111 1111 1111 1111, refund to 5500-0000-0000-0004",
        "Paid with <CREDIT_CARD>, refund to <CREDIT_CARD>",
    ),
    ("银联卡6212345678901234569谢谢", "银联卡<CREDIT_CARD>谢谢"),
    ("IBAN GB82 WEST 1234 5698 7654 32 please; 转账到DE89370400440532013000", "IBAN <IBAN> please; 转账到<IBAN>"),
    ("login from 192.168.1.20 and 2001:db8::1", "login from <IP_ADDRESS> and <IP_ADDRESS>"),
    ("IP地址10.0.0.7访问了https://www.example.com/u/42?q=1谢谢", "IP地址<IP_ADDRESS>访问了<URL>谢谢"),
    ("See www.example.org/about.", "See <URL>."),
    ("身份证号11010519491231002X，", "身份证号<CN_RESIDENT_ID>，"),
    # Passes Luhn as well: an ID, not a card.
    ("证件440305199003071156已登记", "证件<CN_RESIDENT_ID>已登记"),
    ("Ticket by EMP-123456 about Nightingale; 夜莺计划启动", "Ticket by <EMPLOYEE_ID> about <PROJECT>; <PROJECT>启动"),
]
VALUES = [
    "zhang.san@example.com",
    "john.doe@example.co.uk",
    "+44 20 7946 0958",
    "+1 (415) 555-2671",
    "13812345678",
    "138 1234 5678",
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "6212345678901234569",
    "GB82 WEST 1234 5698 7654 32",
    "DE89370400440532013000",
    "192.168.1.20",
    "2001:db8::1",
    "10.0.0.7",
    "www.example.com",
    "www.example.org",
    "11010519491231002X",
    "440305199003071156",
    "EMP-123456",
    "Nightingale",
    "夜莺计划",
]
EXPECTED = {
    "EMAIL": 2,
    "PHONE": 4,
    "CREDIT_CARD": 3,
    "IBAN": 2,
    "IP_ADDRESS": 3,
    "URL": 2,
    "CN_RESIDENT_ID": 2,
    "EMPLOYEE_ID": 1,
    "PROJECT": 2,
}
# No personal data, though full of numbers: each must come back untouched.
PLAIN = [
    "Sales rose 1.7% to 16.87 euros; the 2004-05 season, £15.8m and 2,225 articles in 1999.",
    "Federer won 7-6 (7-5) 4-6 6-3 4-6 6-0 at 10:30:45, version 1.2.3.4.5, he said.It was",
    "Not a card: 4111111111111112. Not an ID: 110105194912310021 or 440305199002301239.",
    "2023年12月31日，营收增长15.8%，达到1,234,567元，订单号20231231123456，股票代码600519。",
    "人口1411778724人，ISBN 978-7-111-54742-6，时间10:30:45，emp-123456 and nightingales.",
]


def frame(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "text": texts, "label": "x"})


def test_planted_pii_is_masked_and_counted():
    data = frame([text for text, _ in PLANTED] + PLAIN)
    result = scan(data, CFG)
    assert result.frame["text"].tolist() == [masked for _, masked in PLANTED] + PLAIN
    report = result.report
    assert report.findings == {entity: EXPECTED.get(entity, 0) for entity in CFG.detects}
    assert report.findings_by_column == {"text": report.findings}
    assert report.rows_with_pii == len(PLANTED) and report.rows == len(data) and report.rows_dropped == 0
    assert report.rows_by_entity["PHONE"] == 2 and report.rows_by_entity["PROJECT"] == 1


def test_no_planted_value_survives_or_reaches_the_report():
    result = scan(frame([text for text, _ in PLANTED]), CFG)
    written = result.frame.to_json() + result.report.model_dump_json() + json.dumps(result.report.metrics())
    with pytest.raises(KilnError) as failed:
        scan(frame([text for text, _ in PLANTED]), CFG.model_copy(update={"policy": "fail"}))
    for value in VALUES:
        assert value not in written and value not in str(failed.value), value


def test_text_without_pii_comes_back_byte_identical():
    data = frame(PLAIN)
    result = scan(data, CFG)
    assert result.frame is data
    assert [t.encode() for t in result.frame["text"]] == [t.encode() for t in PLAIN]
    assert result.report.rows_with_pii == 0 and set(result.report.findings.values()) == {0}


def test_drop_removes_rows_with_any_finding():
    data = frame([PLAIN[0], PLANTED[0][0], PLAIN[1], PLANTED[3][0]])
    result = scan(data, CFG.model_copy(update={"policy": "drop"}))
    assert result.frame["id"].tolist() == ["r0", "r2"] and result.frame["text"].tolist() == PLAIN[:2]
    assert result.report.rows_dropped == 2 and result.report.findings["PHONE"] == 2


def test_fail_names_counts_and_row_ids():
    data = frame([PLAIN[0], PLANTED[0][0], PLANTED[3][0], PLANTED[2][0]])
    with pytest.raises(
        KilnError,
        match=r"personal data in 3 of 4 rows \(EMAIL in 1 row, PHONE in 2 rows\), "
        r"e\.g\. r1, r2, r3; set ingest\.pii\.policy to mask",
    ):
        scan(data, CFG.model_copy(update={"policy": "fail"}))
    clean = frame(PLAIN)
    assert scan(clean, CFG.model_copy(update={"policy": "fail"})).frame is clean


def test_every_listed_column_is_scanned_and_counted_apart():
    data = frame(["mail a@example.com", "nothing"]).assign(note=["call 13812345678", "b@example.com"])
    result = scan(data, CFG.model_copy(update={"columns": ["text", "note"]}))
    assert result.frame["note"].tolist() == ["call <PHONE>", "<EMAIL>"]
    by_column = result.report.findings_by_column
    assert (by_column["text"]["EMAIL"], by_column["note"]["EMAIL"], by_column["note"]["PHONE"]) == (1, 1, 1)
    assert result.report.rows_with_pii == 2
    assert result.report.metrics()["pii/note/PHONE"] == 1.0 and result.report.metrics()["pii/EMAIL"] == 2.0


def test_missing_column_is_named():
    with pytest.raises(KilnError, match=r"ingest\.pii\.columns: body not in the data"):
        scan(frame(["x"]), PiiConfig(columns=["body"]))


def test_only_the_chosen_entities_are_found():
    result = scan(frame([PLANTED[2][0], PLANTED[0][0]]), PiiConfig(entities=["EMAIL"]))
    assert result.frame["text"].tolist() == [PLANTED[2][0], PLANTED[0][1]]
    assert result.report.findings == {"EMAIL": 1}


def test_bbc_news_is_left_alone_but_for_its_real_numbers():
    # 2,225 articles full of years, scores and money; the only findings are three
    # helpline numbers and three web addresses that the articles print.
    report = scan(read_bbc(), PiiConfig()).report
    assert report.findings == {**dict.fromkeys(BUILT_IN, 0), "PHONE": 3, "URL": 3}
    assert report.rows_with_pii == 5


def test_cn_id_check_character_and_date():
    assert cn_id_valid("11010519491231002X") and cn_id_valid("11010519491231002x")
    assert cn_id_valid("310115200002294567")  # 29 February 2000
    assert not cn_id_valid("110105194912310021")  # wrong check character
    assert not cn_id_valid("440305199002301239")  # 30 February, right check character


def test_config_shorthand_and_yaml_off():
    assert PiiConfig.model_validate("drop").policy == "drop"
    assert PiiConfig.model_validate(False).policy == "off"  # PyYAML reads `ingest.pii: off` as false
    assert PiiConfig.model_validate({"policy": False}).policy == "off"
    cfg = PiiConfig.model_validate({"patterns": {"ORDER": {"regex": r"ORD\d+", "score": 0.4}}, "deny_list": ["Ann"]})
    assert cfg.patterns["ORDER"].score == 0.4 and cfg.deny_list == {"DENY_LIST": ["Ann"]}
    assert cfg.detects == [*BUILT_IN, "ORDER", "DENY_LIST"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"patterns": {"ORDER": "ORD(\\d+"}}, r"ORDER: 'ORD\(\\d\+' is not a valid regex"),
        ({"patterns": {"ORDER": "\\d*"}}, "matches the empty string"),
        ({"patterns": {"order id": "ORD\\d+"}}, "'order id' is not an entity name"),
        ({"deny_list": {"NAME": [" "]}}, "NAME: give at least one term, none of them blank"),
        ({"phone_regions": ["UK"]}, "'UK': not a region phonenumbers knows"),
        ({"entities": ["EMAIL", "NAME"]}, "entities"),
        ({"entities": ["EMAIL", "EMAIL"]}, "lists EMAIL more than once"),
        ({"policy": "redact"}, "policy"),
        ({"polcy": "mask"}, "polcy"),
    ],
)
def test_bad_config_is_named(data, message):
    with pytest.raises(ValidationError, match=message):
        PiiConfig.model_validate(data)


def test_params_and_policy_off_never_import_presidio():
    code = (
        "import sys, pandas as pd\n"
        "from components.data.pii_config import PiiConfig\n"
        "from components.data.pii import scan\n"
        "cfg = PiiConfig.model_validate({'policy': False, 'patterns': {'X': 'x+'}})\n"
        "frame = pd.DataFrame({'text': ['a@example.com']})\n"
        "assert scan(frame, cfg).frame is frame\n"
        "heavy = [m for m in ('presidio_analyzer', 'spacy', 'phonenumbers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_report_round_trips_as_json():
    report = scan(frame([PLANTED[0][0]]), CFG).report
    assert PiiReport.model_validate_json(report.model_dump_json()) == report


def test_a_large_column_is_scanned_on_every_core_with_the_same_result(monkeypatch):
    import components.data.pii as pii

    data = frame([text for text, _ in PLANTED] + PLAIN)
    alone = scan(data, CFG)
    monkeypatch.setattr(pii, "PARALLEL_MIN", 2)
    monkeypatch.setattr("components.runtime.session.cores", lambda: 2)
    shared = scan(data, CFG)
    assert shared.frame.equals(alone.frame) and shared.report == alone.report
