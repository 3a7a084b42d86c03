"""The rolling refresh (`plannr-pipeline refresh`, its schedule): every record re-read as soon as
the token's budget allows, the stalest first."""
