"""WebDataset tar shards of the ingested clips, split by identity, local or on S3.

Layout under the output root (a directory or s3://bucket/prefix):

    index.json                          which shards make the dataset, written last (index.py)
    {version}/train-000000.tar          version = first 16 hex digits of the dataset digest
    {version}/val-000000.tar ...

identity_split.py assigns people to splits, sample.py says what one sample holds, writer.py is the `shard`
stage, reader.py opens a split with the stock `webdataset.WebDataset`.
"""
