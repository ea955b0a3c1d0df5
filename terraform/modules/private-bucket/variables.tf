variable "bucket" {
  description = "Bucket name (or null to use bucket_prefix)."
  type        = string
  default     = null
}

variable "bucket_prefix" {
  description = "Prefix of a generated bucket name, when bucket is null."
  type        = string
  default     = null
}

variable "kms_key_arn" {
  description = "KMS key for default encryption."
  type        = string
}

variable "tags" {
  description = "Tags on the bucket."
  type        = map(string)
  default     = {}
}
