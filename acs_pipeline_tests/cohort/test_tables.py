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
    out = tables.read_tables(FILES.__getitem__)
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


def test_bad_boolean_and_number_are_named():
    with pytest.raises(tables.TableError, match="has_depress.*maybe"):
        tables.parse_table("ecg_metadata", META.replace(b"True,False,False,True",
                                                        b"maybe,False,False,True"))
    with pytest.raises(tables.TableError, match="age_at_admit.*sixty"):
        tables.parse_table("ed_encounter", ENC.replace(b",61,", b",sixty,"))


def test_duplicate_keys_are_counted():
    dup = META + b"pat0000000b,ecg000000000b,2114-05-06,0,1,0,0,z\n"
    out = tables.read_tables({**FILES, "ecg-metadata.csv": dup}.__getitem__)
    assert tables.key_problems(out) == {"ecg_metadata.ecg_id": 1}
