# Optional Kinesis sources of raw-append: created here, or existing streams named in
# kinesis_streams; either way the raw-append role may read exactly these.
resource "aws_kinesis_stream" "source" {
  for_each         = var.create_kinesis_streams ? toset(var.kinesis_streams) : toset([])
  name             = each.key
  shard_count      = var.kinesis_shard_count
  retention_period = 168 # a week: a stopped pipeline has days to resume before records expire unread
  encryption_type  = "KMS"
  kms_key_id       = aws_kms_key.lake.arn

  stream_mode_details {
    stream_mode = "PROVISIONED"
  }

  tags = local.tags
}

locals {
  kinesis_stream_arns = [for s in var.kinesis_streams : "arn:${local.partition}:kinesis:${local.region}:${local.account_id}:stream/${s}"]
}
