"""Mail providers telling us about bounces and complaints: one parser per provider, each
verifying the provider's own signature, all leading to course.suppression.report."""
