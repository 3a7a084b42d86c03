"""The right to erasure and retention: what is personal where (`rules`), erasing and lifting
(`erase`), keeping erased clients out of later commits (`withhold`) and retention periods
(`retention`, its periods in `periods`). File rewrites go through `plannr_pipeline.storage.erasure` only."""
