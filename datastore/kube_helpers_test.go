package datastore_test

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

func metav1CreateStrict() metav1.CreateOptions {
	return metav1.CreateOptions{FieldValidation: "Strict"}
}
