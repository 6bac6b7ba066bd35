import polars as pl
import pytest

from acs_pipeline.cohort import tables

PATIENT = b"patient_ngsci_id,sex,black,hispanic,white,other,agi_under_25k\n" \
          b"pat0000000a,F,1,0,0,0,1\npat0000000b,M,0,0,1,0,0\n"
META = b"patient_ngsci_id,ecg_id,date,has_depress,has_st_eleva,has_twave_inver," \
       b"has_twave_abnormal,extra_col\n" \
       b"pat0000000a,ecg000000000a,2113-01-02 10:00:00,True,False,False,True,x\n" \
       b"pat0000000b,ecg000000000b,2114-05-06,0,1,0,0,y\n"
LINK = b"ecg_id,ed_enc_id\necg000000000a,enc0000000001\necg000000000b,enc0000000002\n"
ENC = b"patient_ngsci_id,ed_enc_id,start_datetime,age_at_admit,macetrop_pos_or_death_030," \
      b"stent_or_cabg_010_day,cath_010_day,exclude_modeling\n" \
      b"pat0000000a,enc0000000001,2113-01-02,61,1,1,1,False\n" \
      b"pat0000000b,enc0000000002,2114-05-06,70.5,0,0,0,True\n"
FILES = {"patient.csv": PATIENT, "ecg-metadata.csv": META, "ecg-ed-enc.csv": LINK,
         "ed-encounter.csv": ENC}


def test_reads_and_types_all_tables():
    out, rejects = tables.read_tables(FILES.__getitem__)
    assert rejects.is_empty()
    meta = out["ecg_metadata"]
    assert meta["has_depress"].to_list() == [True, False]
    assert meta["has_st_eleva"].dtype == pl.Boolean
    assert meta["date"].dtype == pl.Datetime
    assert "extra_col" in meta.columns  # unknown columns are kept
    # Older data-dictionary race names are accepted and renamed.
    assert out["patient"]["race_black"].to_list() == [True, False]
    assert out["ed_encounter"]["age_at_admit"].to_list() == [61.0, 70.5]
    assert tables.key_problems(out) == {}


def test_missing_column_is_named():
    bad = dict(FILES)
    bad["ed-encounter.csv"] = ENC.replace(b"cath_010_day", b"cath_day")
    with pytest.raises(tables.TableError, match=r"ed-encounter.csv: missing required column.*"
                                                r"cath_010_day"):
        tables.read_tables(bad.__getitem__)


def test_missing_file_is_named():
    bad = {k: v for k, v in FILES.items() if k != "ecg-ed-enc.csv"}
    with pytest.raises(tables.TableError, match="ecg-ed-enc.csv: cannot be read"):
        tables.read_tables(bad.__getitem__)


def test_a_bad_value_quarantines_its_row_a_column_of_none_fails():
    meta = tables.parse_table_rows("ecg_metadata", META.replace(b"True,False,False,True",
                                                                b"maybe,False,False,True"))
    assert meta.frame["ecg_id"].to_list() == ["ecg000000000b"]
    assert meta.rejects.to_dicts() == [{
        "ecg_id": "ecg000000000a", "key": "ecg-metadata.csv:2", "reason": "bad_value",
        "detail": "line 2: column 'has_depress' = 'maybe' is not a boolean"}]
    enc = tables.parse_table_rows("ed_encounter", ENC.replace(b",61,", b",sixty,"))
    assert enc.rejects["detail"].to_list() == [
        "line 2: column 'age_at_admit' = 'sixty' is not a number"]
    # parse_table keeps no silent drop: a quarantined row is an error there
    with pytest.raises(tables.TableError, match="ed-encounter.csv: 1 row.*bad_value.*line 2"):
        tables.parse_table("ed_encounter", ENC.replace(b",61,", b",sixty,"))
    # a column of which no value parses is a structural fault, naming file and column
    with pytest.raises(tables.TableError, match=r"ed-encounter.csv: column 'age_at_admit' "
                                                r"cannot be parsed as numbers.*sixty"):
        tables.parse_table_rows("ed_encounter",
                                ENC.replace(b",61,", b",sixty,").replace(b",70.5,", b",old,"))
    with pytest.raises(tables.TableError, match="has_depress.*booleans"):
        tables.parse_table_rows("ecg_metadata", META.replace(b"True,False", b"maybe,False")
                                .replace(b",0,1,0,0,", b",perhaps,1,0,0,"))


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_reads_the_same(eol):
    out, rejects = tables.read_tables({k: v.replace(b"\n", eol) for k, v in FILES.items()}
                                      .__getitem__)
    want, _ = tables.read_tables(FILES.__getitem__)
    assert rejects.is_empty()
    for name in want:
        assert out[name].equals(want[name]), name


def test_ids_and_values_are_stripped():
    padded = b"ecg_id , ed_enc_id\n ecg000000000a ,enc0000000001  \n\tecg000000000b,  \n"
    parsed = tables.parse_table_rows("ecg_ed_enc", padded)
    assert parsed.frame.to_dicts() == [{"ecg_id": "ecg000000000a", "ed_enc_id": "enc0000000001"},
                                       {"ecg_id": "ecg000000000b", "ed_enc_id": None}]


def test_short_long_and_header_rows_are_quarantined_with_their_line():
    link = (b"ecg_id,ed_enc_id\n"
            b"ecg000000000a,enc0000000001\n"
            b"ecg_id,ed_enc_id\n"              # line 3: the header again
            b"ecg000000000b\n"                 # line 4: short
            b"\n"                              # line 5: blank, no record
            b"ecg000000000c,enc0000000003,x\n"  # line 6: long
            b"ecg000000000d,enc0000000004,\n"   # line 7: an empty extra field is fine
            b'"ecg000000000e","enc\n0000000005"\n'  # lines 8-9: one quoted record
            b"ecg000000000f,enc0000000006\n")  # line 10
    parsed = tables.parse_table_rows("ecg_ed_enc", link)
    assert parsed.frame["ecg_id"].to_list() == ["ecg000000000a", "ecg000000000d",
                                                "ecg000000000e", "ecg000000000f"]
    got = [(r["ecg_id"], r["key"], r["reason"]) for r in parsed.rejects.to_dicts()]
    assert got == [(None, "ecg-ed-enc.csv:3", "repeated_header"),
                   ("ecg000000000b", "ecg-ed-enc.csv:4", "short_row"),
                   ("ecg000000000c", "ecg-ed-enc.csv:6", "long_row")]
    assert parsed.rejects["detail"][1] == "line 4: 1 fields, the header has 2"


def test_structural_faults_name_the_file():
    with pytest.raises(tables.TableError, match="ecg-ed-enc.csv: empty file"):
        tables.parse_table_rows("ecg_ed_enc", b"\n\n")
    with pytest.raises(tables.TableError, match="ecg-ed-enc.csv: not UTF-8 text near line 2"):
        tables.parse_table_rows("ecg_ed_enc", b"ecg_id,ed_enc_id\necg\xff,enc1\n")
    with pytest.raises(tables.TableError, match=r"ecg-ed-enc.csv: column\(s\) \['ecg_id'\] "
                                                "appear more than once"):
        tables.parse_table_rows("ecg_ed_enc", b"ecg_id,ed_enc_id,ecg_id\n")
    # CR-only endings no longer read as one wide row: a missing column is named as such
    with pytest.raises(tables.TableError, match="missing required column.*ed_enc_id"):
        tables.parse_table_rows("ecg_ed_enc", LINK.replace(b"ed_enc_id", b"enc").replace(
            b"\n", b"\r"))


def test_duplicate_keys_are_counted():
    dup = META + b"pat0000000b,ecg000000000b,2114-05-06,0,1,0,0,z\n"
    out, _ = tables.read_tables({**FILES, "ecg-metadata.csv": dup}.__getitem__)
    assert tables.key_problems(out) == {"ecg_metadata.ecg_id": 1}
