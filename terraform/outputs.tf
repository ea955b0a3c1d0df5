output "lake_root" {
  description = "The jobs' LAKEHOUSE_LAKE_ROOT (s3://bucket/prefix)."
  value       = local.lake_root
}

output "lake_bucket" {
  description = "Name of the lake bucket."
  value       = module.lake_bucket.id
}

output "ecr_repository_url" {
  description = "Push the job image here (docker tag/push <url>:<image_tag>)."
  value       = aws_ecr_repository.jobs.repository_url
}

output "ecs_cluster" {
  description = "ECS cluster running the jobs."
  value       = aws_ecs_cluster.this.name
}

output "task_definitions" {
  description = "Task definition family per job (run by hand: aws ecs run-task --task-definition <family> ...)."
  value       = { for job, td in aws_ecs_task_definition.jobs : job => td.family }
}

output "job_role_arns" {
  description = "IAM role per job."
  value       = { for job, r in aws_iam_role.job : job => r.arn }
}

output "log_groups" {
  description = "CloudWatch log group per job (JSON logs, EMF metrics)."
  value       = local.log_group_names
}

output "kafka_bootstrap_brokers" {
  description = "MSK bootstrap brokers with IAM authentication (port 9098)."
  value       = local.kafka_brokers
}

output "msk_cluster_arn" {
  description = "ARN of the MSK cluster (created or given)."
  value       = local.msk_arn
}

output "mwaa_webserver_url" {
  description = "Airflow UI of the MWAA environment."
  value       = aws_mwaa_environment.this.webserver_url
}

output "airflow_bucket" {
  description = "MWAA source bucket (dags/) and Athena results (athena-results/)."
  value       = module.airflow_bucket.id
}

output "glue_database" {
  description = "Glue database for the symlink tables."
  value       = aws_glue_catalog_database.lake.name
}

output "athena_workgroup" {
  description = "Athena workgroup (results encrypted, configuration enforced)."
  value       = aws_athena_workgroup.lake.name
}

output "job_security_group_id" {
  description = "Security group of the job tasks (allow it on VPC endpoints, or on an existing MSK cluster's port 9098)."
  value       = aws_security_group.jobs.id
}
